"""Per-parameter state as the engines keep it: fresh state in the group's ``state_dtype``, the
step counters, and the checks that a group's gradients and state fit its parameters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor
from torch.optim.optimizer import _get_scalar_dtype

from rectified.engines.fused import kernel
from rectified.rules.base import UpdateRule

_COMPLEX_OF = {torch.float16: torch.complex32, torch.bfloat16: torch.complex64,
               torch.float32: torch.complex64, torch.float64: torch.complex128}


def state_dtype(param: Tensor, group: Mapping[str, Any]) -> torch.dtype:
    """The dtype of a parameter's state: the group's ``state_dtype`` (its complex counterpart
    for complex parameters), else the parameter's own."""
    dtype = group.get("state_dtype")
    if dtype is None or not (param.is_floating_point() or param.is_complex()):
        return param.dtype
    return _COMPLEX_OF[dtype] if param.is_complex() else dtype


def _template(param: Tensor, group: Mapping[str, Any]) -> Tensor:
    """What the rule builds fresh state like: the parameter, or an empty tensor of its shape in
    the group's ``state_dtype``."""
    dtype = state_dtype(param, group)
    if dtype == param.dtype:
        return param
    return torch.empty_like(param, dtype=dtype, memory_format=torch.preserve_format)


def state_of(
    state: dict[str, Any], param: Tensor, group: Mapping[str, Any], rule: UpdateRule,
    keys: frozenset[str],
) -> dict[str, Any]:
    """``state`` (a parameter's entry), with what the rule needs filled in fresh."""
    if not state:
        state["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype())
        state.update(rule.init_state(_template(param, group), group))
    elif not state.keys() >= keys:
        # A group may turn on an option that needs more state (e.g. amsgrad) mid-run. Fresh
        # state is only built then: building it every step would allocate and zero-fill every
        # state tensor on every step.
        for key, value in rule.init_state(_template(param, group), group).items():
            state.setdefault(key, value)
    return state


def advance_steps_(steps: list[Tensor]) -> list[int]:
    """Add 1 to every step tensor and return the new counts (one host read for all).

    With the fused kernel loaded, CPU counters are advanced in one call of it: a foreach add
    dispatches once per tensor on the CPU, which costs more than the step itself for many small
    parameters. Under ``torch.compile`` (which cannot trace the kernel's call) torch ops run.
    """
    if not steps:
        return []
    if kernel.is_loaded() and not torch.compiler.is_compiling():
        try:
            return [int(v) for v in kernel.advance_steps_(steps)]
        except RuntimeError:  # counters off the CPU: checked before any was changed
            pass
    torch._foreach_add_(steps, 1.0)
    try:
        values = torch.stack(steps).tolist()
    except RuntimeError:  # steps on different devices
        values = [t.item() for t in steps]
    return [int(v) for v in values]


def check_gradients(owner: str, params: Sequence[Tensor]) -> None:
    """Raise ``RuntimeError`` if a gradient is sparse or not of its parameter's shape."""
    for p in params:
        grad = cast(Tensor, p.grad)
        if grad.is_sparse:
            raise RuntimeError(f"{owner} does not support sparse gradients")
        if grad.shape != p.shape:
            raise RuntimeError(
                f"{owner}: gradient shape {tuple(grad.shape)} does not match parameter shape "
                f"{tuple(p.shape)}"
            )
