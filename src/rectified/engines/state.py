"""Per-parameter state as the engines keep it: fresh state in the group's ``state_dtype``, the
step counters, and the checks that a group's gradients and state fit its parameters."""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor
from torch.optim.optimizer import _get_scalar_dtype

from rectified import formats
from rectified.engines.fused import kernel
from rectified.formats import effective_state_dtype
from rectified.rules.base import UpdateRule

StateMap = Mapping[Tensor, dict[str, Any]]
_COMPLEX_OF = {torch.float16: torch.complex32, torch.bfloat16: torch.complex64,
               torch.float32: torch.complex64, torch.float64: torch.complex128}


def state_dtype(param: Tensor, group: Mapping[str, Any]) -> torch.dtype:
    """The dtype of a parameter's state: the group's ``state_dtype`` (its complex counterpart
    for complex parameters), else the parameter's own."""
    dtype = effective_state_dtype(group)
    if dtype is None or not (param.is_floating_point() or param.is_complex()):
        return param.dtype
    if group.get("state_format") in ("bfloat16", "8bit") and param.dtype in (
            torch.float64, torch.complex128):
        return param.dtype  # what a format leaves plain is float32, or wider
    return _COMPLEX_OF[dtype] if param.is_complex() else dtype


def _template(param: Tensor, group: Mapping[str, Any], encoded: str | None) -> Tensor:
    """What the rule builds fresh state like: the parameter, or an empty tensor of its shape in
    the group's ``state_dtype``, or in the dtype of its state format (uint8 codes, bfloat16)."""
    dtype = {"8bit": torch.uint8, "bfloat16": torch.bfloat16}.get(
        encoded or "", state_dtype(param, group))
    if dtype == param.dtype:
        return param
    return torch.empty_like(param, dtype=dtype, memory_format=torch.preserve_format)


def _fresh(param: Tensor, group: Mapping[str, Any], rule: UpdateRule) -> dict[str, Any]:
    """The rule's fresh state, made directly in the group's state format: zero moments are zero
    codes with zero scales (never a float32 moment first, which is the memory a format saves)."""
    storage = formats.storage_of(group)
    encoded = storage.encoded(param) if storage is not None else None
    fresh = rule.init_state(_template(param, group, encoded), group)
    if encoded == "8bit":
        for key in [k for k in fresh if k in formats.MOMENT_KINDS]:
            fresh[formats.scales_key(key)] = formats.zero_scales(param)
    return fresh


def state_of(
    state: dict[str, Any], param: Tensor, group: Mapping[str, Any], rule: UpdateRule,
    keys: frozenset[str],
) -> dict[str, Any]:
    """``state`` (a parameter's entry), with what the rule needs filled in fresh."""
    if not state:
        state["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype())
        state.update(_fresh(param, group, rule))
    elif not state.keys() >= keys:
        # A group may turn on an option that needs more state (e.g. amsgrad) mid-run. Fresh
        # state is only built then: building it every step would allocate and zero-fill every
        # state tensor on every step.
        for key, value in _fresh(param, group, rule).items():
            state.setdefault(key, value)
        if rule.counts_from_state:
            state["step"].zero_()
    return state


_looked_for_kernel = False


def _kernel_built() -> bool:
    """Whether the kernel is loaded, loading it once per process if it was built (a foreach
    optimizer's counters use it too; nothing is compiled for them)."""
    global _looked_for_kernel
    if not kernel.is_loaded() and not _looked_for_kernel:
        _looked_for_kernel = True
        kernel.load(build_if_missing=False)
    return kernel.is_loaded()


def advance_steps_(steps: list[Tensor]) -> list[int]:
    """Add 1 to every step tensor and return the new counts (one host read for all).

    With the fused kernel loaded, CPU counters are advanced in one call of it: a foreach add
    dispatches once per tensor on the CPU, which costs more than the step itself for many small
    parameters. Under ``torch.compile`` (which cannot trace the kernel's call) torch ops run.
    """
    if not steps:
        return []
    if _kernel_built() and not torch.compiler.is_compiling():
        try:
            return [int(v) for v in kernel.advance_steps_(steps)]
        except RuntimeError:  # counters off the CPU: checked before any was changed
            pass
    torch._foreach_add_(steps, 1)  # an integer counter set by hand takes it too
    try:
        values = torch.stack(steps).tolist()
    except RuntimeError:  # steps on different devices
        values = [t.item() for t in steps]
    return [int(v) for v in values]


def check_gradients(owner: str, params: Sequence[Tensor], state: StateMap | None = None,
                    keys: Sequence[str] = (), group: Mapping[str, Any] | None = None) -> None:
    """Raise ``RuntimeError`` if a step of ``params`` cannot be right, before anything moves:
    a gradient that is sparse or not of its parameter's shape, a parameter or state tensor with
    a lazy bit (conjugation: no engine can write its values through a real view; negation:
    torch's foreach ops refuse to write it, possibly after a step began), or a state tensor of
    ``keys`` whose shape is not its parameter's (a parameter resized, or given a ``.data`` of
    another shape, since its state was made). Gradients with lazy bits are fine: only read.
    Warns once per (ε, dtype) where the ``group``'s ε rounds to 0 in the dtype the step
    computes in (see :func:`eps_underflows`).
    """
    if _kernel_built() and not torch.compiler.is_compiling():
        _check_in_kernel(owner, params, state, keys)
    else:
        _check_each(owner, params, state, keys)
    if group is not None:  # parameters with another state_dtype compute in float32 or wider
        chosen = effective_state_dtype(group)
        eps_underflows(group, {p.dtype for p in params if chosen in (None, p.dtype)}, warn=True)


def _check_in_kernel(owner: str, params: Sequence[Tensor], state: StateMap | None,
                     keys: Sequence[str]) -> None:
    """:func:`check_gradients`' tests in one call of the kernel (1,000 parameters: 0.5 ms
    instead of 1.9)."""
    grads = [cast(Tensor, p.grad) for p in params]
    entries = [state.get(p) or _EMPTY for p in params] if state is not None else []
    states = [value if isinstance(value := entry.get(key), Tensor) else None
              for entry in entries for key in keys] if entries else []
    unfit = kernel.first_unfit(list(params), grads, states, len(keys) if entries else 0)
    if unfit >= 0:
        p = params[unfit]
        _raise_unfit(owner, unfit, p, grads[unfit], entries[unfit] if entries else {}, keys)


_EMPTY: dict[str, Any] = {}


def _check_each(owner: str, params: Sequence[Tensor], state: StateMap | None,
                keys: Sequence[str]) -> None:
    for position, p in enumerate(params):
        grad = cast(Tensor, p.grad)
        shape = p.shape
        # One cheap test per tensor; the message is found only when something is wrong.
        unfit = grad.is_sparse or grad.shape != shape or p.is_conj() or p.is_neg()
        entry = state.get(p) if state is not None and not unfit else None
        if entry:
            for key in keys:
                value = entry.get(key)
                if isinstance(value, Tensor) and (
                        value.shape != shape or value.is_conj() or value.is_neg()):
                    unfit = True
                    break
        if unfit:
            _raise_unfit(owner, position, p, grad, state.get(p, {}) if state else {}, keys)


def _raise_unfit(owner: str, position: int, p: Tensor, grad: Tensor, entry: Mapping[str, Any],
                 keys: Sequence[str]) -> None:
    """The error of a parameter that :func:`check_gradients` found unfit."""
    if grad.is_sparse:
        raise RuntimeError(f"{owner} does not support sparse gradients")
    if grad.shape != p.shape:
        raise RuntimeError(
            f"{owner}: gradient shape {tuple(grad.shape)} does not match parameter shape "
            f"{tuple(p.shape)}"
        )
    lazy = _lazy_bit(p)
    if lazy:
        raise RuntimeError(
            f"{owner}: parameter {position} is a lazily {lazy} view; give it resolved "
            "values first (p.data = p.data.resolve_conj().resolve_neg())"
        )
    for key in keys:
        value = entry.get(key)
        if not isinstance(value, Tensor):
            continue
        if value.shape != p.shape:
            raise RuntimeError(
                f"{owner}: state {key!r} of parameter {position} has shape "
                f"{tuple(value.shape)}, the parameter has shape {tuple(p.shape)} "
                "(was the parameter resized? a resized parameter needs fresh state)"
            )
        lazy = _lazy_bit(value)
        if lazy:
            raise RuntimeError(
                f"{owner}: state {key!r} of parameter {position} is a lazily {lazy} view"
            )


def _lazy_bit(tensor: Tensor) -> str:
    """'conjugated (is_conj())' or 'negated (is_neg())' for a tensor with that lazy bit."""
    if tensor.is_conj():
        return "conjugated (is_conj())"
    return "negated (is_neg())" if tensor.is_neg() else ""


_warned_underflow: set[tuple[float, torch.dtype]] = set()


def eps_underflows(group: Mapping[str, Any], dtypes: Iterable[torch.dtype],
                   warn: bool = False) -> bool:
    """Whether the group's ε > 0 rounds to 0 in one of ``dtypes`` (ε = 1e-8 in float16,
    whose smallest number is 6e-8). The reference and foreach engines, and torch.optim, then
    divide by √v + 0 = 0 wherever the squared gradients underflow too, and turn parameters
    inf or NaN. With ``warn``, warns once per (ε, dtype).
    """
    eps = group.get("eps")
    if isinstance(eps, Tensor):
        eps = eps.item() if eps.numel() == 1 else None
    if not isinstance(eps, int | float) or isinstance(eps, bool) or not eps > 0:
        return False
    found = False
    for dtype in dtypes:
        if (dtype.is_floating_point or dtype.is_complex) and _rounds_to_zero(float(eps), dtype):
            found = True
            if warn and (eps, dtype) not in _warned_underflow:
                _warned_underflow.add((eps, dtype))
                warnings.warn(
                    f"eps={eps} is 0 in {dtype}: steps of {dtype} parameters divide by zero "
                    "wherever their squared gradients underflow too, and turn them inf or NaN "
                    "(as in torch.optim); use an eps the dtype holds (>= 6e-8 in float16) or "
                    "state_dtype=torch.float32",
                    RuntimeWarning, stacklevel=_user_frame(),
                )
    return found


def _user_frame() -> int:
    """The stack level of the first caller outside rectified and torch (the user's step)."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").split(".")[0] in (
        "rectified", "torch"
    ):
        frame, level = frame.f_back, level + 1
    return level


@functools.cache
def _rounds_to_zero(eps: float, dtype: torch.dtype) -> bool:
    real = torch.empty(0, dtype=dtype).real.dtype if dtype.is_complex else dtype
    return torch.tensor(eps, dtype=real).item() == 0.0
