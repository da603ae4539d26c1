"""Adam-family steps run by torch's own fused Adam kernels: the fused engine's path on CUDA.

The project's fused kernel (``csrc/fused_cpu.cpp``) runs on the CPU only. On CUDA, torch ships
multi-tensor fused Adam/AdamW kernels, ``torch._fused_adam_`` and ``torch._fused_adamw_`` (they
have CPU implementations too, which is how this module is tested without a GPU). A traced step
(:class:`~rectified.engines.fused.Program`) that is exactly an Adam-family step is handed to
them: :func:`match` recognises it and returns the kernel's arguments, :func:`run_` calls the
kernel. Anything else (RAdam's un-adapted first steps, AdaBound's clamp, other rules) gets None
and stays with the other engines.

What the rules trace (slots p, g, m, v, [vmax]; u, t temporaries; [...] optional)::

    [MUL_SCALAR p, p, c]           decoupled decay             p <- c p
    [NEG u, g]                     maximize                    u = -g
    [ADD u, u|g, p, λ]             coupled decay               u = u + λ p
    LERP m, m, u, w                                            m <- m + w (u - m)
    MUL_SCALAR v, v, β2;  ADDCMUL v, v, u, u, 1 - β2           v <- β2 v + (1 - β2) u²
    [MAXIMUM vmax, vmax, v]        AMSGrad; SQRT then reads vmax
    SQRT t, v;  [DIV_SCALAR t, t, s];  ADD_SCALAR t, t, e      t = √v / s + e
    ADDCDIV p, p, m, t, k                                      p <- p + k m / t

What torch's kernels compute (CPU ``FusedAdamKernel.cpp``, CUDA ``fused_adam_utils.cuh``), with
bc1 = 1 - β1^step and bc2 = 1 - β2^step from ``state_steps``::

    g <- -g if maximize;  then Adam: g <- g + λ p,  AdamW: p <- p (1 - γ λ)
    m <- β1 m + (1 - β1) g;  v <- β2 v + (1 - β2) g²;  AMSGrad: vmax <- max(vmax, v)
    p <- p - (γ / bc1) m / (√v / √bc2 + ε)

The step enters the kernels only through bc1 and bc2. A step of +inf makes β^step = +0 for
0 <= β < 1 (IEEE pow, and CUDA's pow documents the same special case), so bc1 = bc2 = 1 exactly
and the last line is p - γ m / (√v + ε). Multiplying our denominator and numerator by s > 0,

    p + k m / (√v / s + e) = p + (k s) m / (√v + e s),

which is the kernel's update with γ = -k s and ε = e s. The rest maps one to one: β1 = 1 - w
(checked to give back exactly w), β2 as traced (the ADDCMUL weight must be exactly 1 - β2),
maximize and coupled λ are the kernel's own ``maximize`` and ``weight_decay`` (negation first,
then + λ p, the rules' order), and decoupled p <- c p is ``_fused_adamw_``'s p (1 - γ λ) with
λ = (1 - c) / γ. The kernels evaluate these expressions in another order than the traced
program, so results agree up to rounding, not bit for bit.

Forms without an exact counterpart give None: both kinds of decay at once, decoupled decay with
γ = 0 and c != 1 (with lr = 0 the rules trace c = 1, no decay at all), β outside [0, 1), s <= 0,
scalars that are not finite or that vanish when rescaled, and any other instruction. One
difference remains that rounding does not cover: where v is NaN, torch's AMSGrad max may keep
the old running max (``std::max``), while the traced MAXIMUM propagates the NaN. v only turns
NaN after a NaN gradient, which turns m, and so the parameter, NaN for good in both.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from rectified.engines.fused import (
    ADD,
    ADD_SCALAR,
    ADDCDIV,
    ADDCMUL,
    DIV_SCALAR,
    LERP,
    MAXIMUM,
    MUL_SCALAR,
    NEG,
    SQRT,
    Program,
)

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class AdamCall:
    """The arguments of ``torch._fused_adam_`` (``_fused_adamw_`` when ``decoupled``) for one
    traced step, and the slots its tensor lists come from."""

    n_slots: int
    param: int
    grad: int
    exp_avg: int
    exp_avg_sq: int
    max_exp_avg_sq: int | None
    lr: float
    beta1: float
    beta2: float
    weight_decay: float
    eps: float
    maximize: bool
    decoupled: bool

    @property
    def amsgrad(self) -> bool:
        return self.max_exp_avg_sq is not None

    @property
    def slots(self) -> tuple[int, ...]:
        """The slots the kernel reads or writes, in its argument order."""
        extra = () if self.max_exp_avg_sq is None else (self.max_exp_avg_sq,)
        return (self.param, self.grad, self.exp_avg, self.exp_avg_sq, *extra)


class _Instruction(NamedTuple):
    op: int
    dst: int
    a: int
    b: int
    c: int
    s0: float
    s1: float


def _decode(program: Program) -> list[_Instruction] | None:
    code, scalars = program.code, program.scalars
    n = len(code) // 5
    if len(code) != 5 * n or len(scalars) != 2 * n:
        return None
    if any(not 0 <= r < program.n_registers for i in range(n) for r in code[5 * i + 1 : 5 * i + 5]):
        return None
    return [_Instruction(*code[5 * i : 5 * i + 5], *scalars[2 * i : 2 * i + 2]) for i in range(n)]


def _finite(*values: float) -> bool:
    return all(math.isfinite(x) for x in values)


def match(program: Program) -> AdamCall | None:
    """The fused Adam call that computes ``program``, or None if it is not exactly one."""
    code = _decode(program)
    if code is None:
        return None
    n_slots = program.n_slots

    def is_slot(r: int) -> bool:
        return r < n_slots

    pos = 0

    def take(op: int) -> _Instruction | None:
        nonlocal pos
        if pos < len(code) and code[pos].op == op:
            pos += 1
            return code[pos - 1]
        return None

    # Prologue, up to the first moment. `gradient` is the register holding the gradient the
    # moments read: the raw slot, or the temporary that NEG / ADD wrote.
    decay: _Instruction | None = None
    negate: _Instruction | None = None
    coupled: _Instruction | None = None
    raw_grad: int | None = None
    gradient: int | None = None
    while pos < len(code) and code[pos].op != LERP:
        x = code[pos]
        if x.op == MUL_SCALAR and decay is None and x.dst == x.a and is_slot(x.dst):
            decay = x
        elif x.op == NEG and gradient is None and is_slot(x.a) and not is_slot(x.dst):
            negate, raw_grad, gradient = x, x.a, x.dst
        elif (x.op == ADD and coupled is None and not is_slot(x.dst) and is_slot(x.b)
              and (x.a == gradient if gradient is not None else is_slot(x.a))):
            if gradient is None:
                raw_grad = x.a
            coupled, gradient = x, x.dst
        else:
            return None
        pos += 1

    lerp = take(LERP)
    if lerp is None:
        return None
    if gradient is None:
        raw_grad = gradient = lerp.b
    exp_avg = lerp.dst
    if lerp.a != exp_avg or lerp.b != gradient or not is_slot(raw_grad):
        return None
    scale, accumulate = take(MUL_SCALAR), take(ADDCMUL)
    if scale is None or accumulate is None:
        return None
    exp_avg_sq = scale.dst
    if not (scale.a == exp_avg_sq and accumulate.dst == exp_avg_sq and accumulate.a == exp_avg_sq
            and accumulate.b == gradient and accumulate.c == gradient):
        return None
    second = exp_avg_sq
    running_max = take(MAXIMUM)
    max_exp_avg_sq = None
    if running_max is not None:
        max_exp_avg_sq = second = running_max.dst
        if running_max.a != max_exp_avg_sq or running_max.b != exp_avg_sq:
            return None
    root = take(SQRT)
    if root is None or root.a != second or is_slot(root.dst):
        return None
    denom = root.dst
    divide = take(DIV_SCALAR)
    shift = take(ADD_SCALAR)
    step = take(ADDCDIV)
    if shift is None or step is None or pos != len(code):
        return None
    param = step.dst
    if any(x.dst != denom or x.a != denom for x in (divide, shift) if x is not None):
        return None
    if step.a != param or step.b != exp_avg or step.c != denom:
        return None
    slots = [param, raw_grad, exp_avg, exp_avg_sq]
    if max_exp_avg_sq is not None:
        slots.append(max_exp_avg_sq)
    if not all(is_slot(r) for r in slots) or len(set(slots)) != len(slots):
        return None
    if (decay is not None and decay.dst != param) or (coupled is not None and coupled.b != param):
        return None
    if decay is not None and coupled is not None:
        return None

    weight = lerp.s0
    beta1, beta2 = 1.0 - weight, scale.s0
    if not (0.0 <= beta1 < 1.0 and 1.0 - beta1 == weight):
        return None
    if not (0.0 <= beta2 < 1.0 and accumulate.s0 == 1.0 - beta2):
        return None
    s = divide.s0 if divide is not None else 1.0
    if not (_finite(s) and s > 0):
        return None
    lr, eps = -step.s0 * s, shift.s0 * s
    if not _finite(lr, eps) or (lr == 0) != (step.s0 == 0) or (eps == 0) != (shift.s0 == 0):
        return None

    weight_decay, decoupled = 0.0, False
    if coupled is not None:
        weight_decay = coupled.s0
        # The kernel skips the decay at λ = 0, where the program still adds 0 · p (NaN for inf p).
        if weight_decay == 0 or not _finite(weight_decay):
            return None
    elif decay is not None and decay.s0 != 1.0:
        if lr == 0:  # p <- c p with no step: the kernel's decay is γ λ p, and γ = 0
            return None
        weight_decay, decoupled = (1.0 - decay.s0) / lr, True
        if weight_decay == 0 or not _finite(weight_decay):
            return None

    return AdamCall(
        n_slots=n_slots,
        param=param,
        grad=raw_grad,
        exp_avg=exp_avg,
        exp_avg_sq=exp_avg_sq,
        max_exp_avg_sq=max_exp_avg_sq,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        weight_decay=weight_decay,
        eps=eps,
        maximize=negate is not None,
        decoupled=decoupled,
    )


_INFINITE_STEPS: dict[torch.device, Tensor] = {}


def _infinite_step(device: torch.device) -> Tensor:
    """A float32 +inf on ``device`` (the kernels read the step as float), made once per device:
    the kernels only read it."""
    step = _INFINITE_STEPS.get(device)
    if step is None:
        step = _INFINITE_STEPS[device] = torch.full((), math.inf, dtype=torch.float32,
                                                     device=device)
    return step


def _check(call: AdamCall, slots: Sequence[Sequence[Tensor]]) -> None:
    if len(slots) != call.n_slots:
        raise ValueError(f"expected {call.n_slots} tensor lists, got {len(slots)}")
    lengths = {len(xs) for xs in slots}
    if len(lengths) > 1:
        raise ValueError(f"tensor lists of different lengths: {sorted(lengths)}")
    for i, p in enumerate(slots[call.param]):
        if p.dtype not in DTYPES:
            raise ValueError(f"parameter {i}: dtype {p.dtype} is not one of {DTYPES}")
        for s in call.slots:
            # torch's CPU kernel checks nothing: it walks each tensor's memory as the parameter's
            # dtype, so a mismatch is misread or fails halfway down the list. CUDA's checks are
            # per kernel call, and run_ makes one call per (device, dtype).
            x = slots[s][i]
            contiguous = x.layout == torch.strided and x.is_contiguous()
            if not (contiguous and x.dtype == p.dtype and x.device == p.device
                    and x.shape == p.shape and x.stride() == p.stride()):
                raise ValueError(
                    f"parameter {i}: list {s} holds a {x.dtype} {tuple(x.shape)} tensor on "
                    f"{x.device} (contiguous: {contiguous}), expected a contiguous "
                    f"{p.dtype} {tuple(p.shape)} tensor on {p.device} like the parameter"
                )


def run_(call: AdamCall, slots: Sequence[Sequence[Tensor]]) -> None:
    """Run ``call`` in place on ``slots`` (``slots[s][i]``: list s of parameter i, as for
    :func:`rectified.engines.fused.run`).

    Every tensor is checked before any is written: a parameter's gradient and state must be
    contiguous tensors of its shape, dtype (float32, float64, bfloat16 or float16) and device;
    otherwise ``ValueError`` and nothing changes. Parameters of several devices or dtypes are
    run as one kernel call per (device, dtype).
    """
    _check(call, slots)
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
    for i, p in enumerate(slots[call.param]):
        groups[(p.device, p.dtype)].append(i)
    batches = []
    for (device, _), index in groups.items():
        lists = [[slots[s][i] for i in index] for s in call.slots]
        batches.append((lists, [_infinite_step(device)] * len(index)))
    kernel = torch._fused_adamw_ if call.decoupled else torch._fused_adam_
    with torch.no_grad():
        for (params, grads, exp_avgs, exp_avg_sqs, *max_exp_avg_sqs), steps in batches:
            kernel(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                max_exp_avg_sqs[0] if max_exp_avg_sqs else [],
                steps,
                lr=call.lr,
                beta1=call.beta1,
                beta2=call.beta2,
                weight_decay=call.weight_decay,
                eps=call.eps,
                amsgrad=call.amsgrad,
                maximize=call.maximize,
            )
