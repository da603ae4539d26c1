"""Adam steps run by torch's own fused Adam kernels: the fused engine's path on CUDA.

The project's kernel runs on the CPU only. On CUDA, torch ships multi-tensor fused Adam/AdamW
kernels, ``torch._fused_adam_`` and ``torch._fused_adamw_`` (with CPU implementations too,
which is how this module is tested without a GPU). A traced program that is one ``adam_step_``
in ``ADAPTIVE`` mode is handed to them; anything else (RAdam's un-adapted first steps,
AdaBound, other rules) stays with the foreach engine.

torch's kernels compute, with bc1 = 1 - β1^step and bc2 = 1 - β2^step from ``state_steps``::

    g <- -g if maximize;  then Adam: g <- g + λ p,  AdamW: p <- p (1 - γ λ)
    m <- β1 m + (1 - β1) g;  v <- β2 v + (1 - β2) g²;  AMSGrad: vmax <- max(vmax, v)
    p <- p - (γ / bc1) m / (√v / √bc2 + ε)

A step of +inf makes β^step = +0 for 0 <= β < 1 (IEEE pow; CUDA's pow documents the same), so
bc1 = bc2 = 1 and the last line is p - γ m / (√v + ε). An ``adam_step_`` with step size k,
denominator scale s and ε e computes p - k m / (√v / s + e) = p - (k s) m / (√v + e s): the
kernel's update with γ = k s and ε = e s. Its decoupled decay p <- c p is ``_fused_adamw_``'s
p (1 - γ λ) with λ = (1 - c) / γ; its coupled λ and ``maximize`` are the kernel's own. The
kernels evaluate in another order, so results agree up to rounding. Forms without an exact
counterpart stay with foreach: both kinds of decay at once, decoupled decay with γ = 0, β
outside [0, 1), s <= 0, and scalars that are not finite or vanish when rescaled. Where v is
NaN, torch's AMSGrad max may keep the old running max (``std::max``) while ``adam_step_``
propagates the NaN; v only turns NaN after a NaN gradient, which turns m and the parameter NaN
for good in both.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from rectified.engines.fused.program import Program, instructions
from rectified.rules.moments import ADAPTIVE, AdamStep

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class AdamCall:
    """The arguments of ``torch._fused_adam_`` (``_fused_adamw_`` when ``decoupled``) and the
    slots its tensor lists come from (param, grad, exp_avg, exp_avg_sq[, max_exp_avg_sq])."""

    slots: tuple[int, ...]
    lr: float
    beta1: float
    beta2: float
    weight_decay: float
    eps: float
    maximize: bool
    decoupled: bool

    @property
    def amsgrad(self) -> bool:
        return len(self.slots) == 5


def _finite(*values: float) -> bool:
    return all(math.isfinite(x) for x in values)


def adam_call(program: Program) -> AdamCall | None:
    """The fused Adam call that computes ``program``, or None if it is not exactly one."""
    code = instructions(program)
    if len(code) != 1 or code[0][0] != "adam_step_":
        return None
    _, registers, scalars = code[0]
    arguments: dict[str, Any] = {f.name: value for f, value in zip(fields(AdamStep), scalars)}
    step = AdamStep(**arguments)
    if step.mode != ADAPTIVE or not (0.0 <= step.beta1 < 1.0 and 0.0 <= step.beta2 < 1.0):
        return None
    s = step.denom_scale
    if not (_finite(s) and s > 0):
        return None
    lr, eps = step.step_size * s, step.eps * s
    if not _finite(lr, eps) or (lr == 0) != (step.step_size == 0) or (eps == 0) != (step.eps == 0):
        return None
    weight_decay, decoupled = step.weight_decay, False
    if step.decay != 1.0:
        if weight_decay != 0 or lr == 0:  # both decays, or p <- c p with no step to carry it
            return None
        weight_decay, decoupled = (1.0 - step.decay) / lr, True
    if not _finite(weight_decay):
        return None
    slots = tuple(r for r in registers if r >= 0)
    # Parameter, gradient, m, v (and v_max): distinct lists of the program's inputs.
    if len(slots) < 4 or len(set(slots)) != len(slots) or max(slots) >= program.n_slots:
        return None
    return AdamCall(slots, lr, step.beta1, step.beta2, weight_decay, eps, bool(step.maximize),
                    decoupled)


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
    if len(slots) <= max(call.slots):
        raise ValueError(f"expected {max(call.slots) + 1} tensor lists, got {len(slots)}")
    lengths = {len(xs) for xs in slots}
    if len(lengths) > 1:
        raise ValueError(f"tensor lists of different lengths: {sorted(lengths)}")
    for i, p in enumerate(slots[call.slots[0]]):
        if p.dtype not in DTYPES:
            raise ValueError(f"parameter {i}: dtype {p.dtype} is not one of {DTYPES}")
        for s in call.slots:
            # torch's CPU kernel checks nothing: it walks each tensor's memory as the parameter's
            # dtype, so a mismatch is misread or fails halfway down the list. CUDA's checks are
            # per kernel call, and run_ makes one call per (device, dtype).
            x = slots[s][i]
            contiguous = x.layout == torch.strided and x.is_contiguous()
            if not (contiguous and x.dtype == p.dtype and x.device == p.device
                    and x.shape == p.shape and x.stride() == p.stride()
                    and not x.is_neg() and not x.is_conj()):
                raise ValueError(
                    f"parameter {i}: list {s} holds a {x.dtype} {tuple(x.shape)} tensor on "
                    f"{x.device} (contiguous: {contiguous}), expected a plain contiguous "
                    f"{p.dtype} {tuple(p.shape)} tensor on {p.device} like the parameter"
                )


def run_(call: AdamCall, slots: Sequence[Sequence[Tensor]]) -> None:
    """Run ``call`` in place on ``slots`` (``slots[s][i]``: list s of parameter i).

    Every tensor is checked before any is written: a parameter's gradient and state must be
    plain contiguous tensors of its shape, dtype (float32, float64, bfloat16 or float16) and
    device; otherwise ``ValueError`` and nothing changes. Parameters of several devices or
    dtypes are run as one kernel call per (device, dtype).
    """
    _check(call, slots)
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
    for i, p in enumerate(slots[call.slots[0]]):
        groups[(p.device, p.dtype)].append(i)
    kernel = torch._fused_adamw_ if call.decoupled else torch._fused_adam_
    with torch.no_grad():
        for (device, _), index in groups.items():
            params, grads, exp_avgs, exp_avg_sqs, *maxes = (
                [slots[s][i] for i in index] for s in call.slots)
            kernel(params, grads, exp_avgs, exp_avg_sqs, maxes[0] if maxes else [],
                   [_infinite_step(device)] * len(index), lr=call.lr, beta1=call.beta1,
                   beta2=call.beta2, weight_decay=call.weight_decay, eps=call.eps,
                   amsgrad=call.amsgrad, maximize=call.maximize)
