"""Checking and copying checkpoints before they are loaded into an optimizer.

A checkpoint is checked whole before anything is loaded, so a refused one leaves the optimizer
as it was. Every error names the group, the parameter (its position in the group) and the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import Tensor

from rectified import formats
from rectified.formats import sharded


def detached_copy(value: Any) -> Any:
    """``value`` with every tensor in it detached and copied."""
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: detached_copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(detached_copy(v) for v in value)
    return value


def check_state_dict(optimizer: torch.optim.Optimizer, state_dict: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` if ``state_dict`` does not fit ``optimizer``'s parameters.

    Checks the number of groups, the number of parameters per group and, for every saved state
    tensor but the ``step`` counter, that its shape is the parameter's shape and its dtype of the
    parameter's kind (complex for complex parameters, floating point for floating ones; a
    different float width is cast on load, as torch.optim does). Every ``step`` must be a whole
    number >= 0 (a Python number or a one-element real tensor). For an optimizer with an update
    rule, a parameter's saved state, unless empty, must hold every state tensor the rule needs
    under the saved group's hyperparameters: a checkpoint of another optimizer (SGD's
    ``momentum_buffer`` or Adagrad's ``sum`` offered to Adam) or one missing a moment is
    refused, rather than loaded with zeroed moments under the old step count. A missing
    ``step`` beside saved state is refused too (a count started again at 1 would, e.g., put
    RAdam back into its warm-up), except for a rule that counts from its state (SGD, whose
    torch.optim checkpoints save none). The scales of 8-bit moments must be finite float32
    tensors of the parameter's block layout.
    """
    if "state" not in state_dict or "param_groups" not in state_dict:
        raise ValueError("state_dict must have the keys 'state' and 'param_groups'")
    groups, saved_groups = optimizer.param_groups, state_dict["param_groups"]
    if len(groups) != len(saved_groups):
        raise ValueError(
            f"loaded state dict has {len(saved_groups)} parameter groups, "
            f"the optimizer has {len(groups)}"
        )
    saved_state = state_dict["state"]
    inner: Any = optimizer
    while isinstance(getattr(inner, "optimizer", None), torch.optim.Optimizer):
        inner = inner.optimizer  # a wrapper saves its inner optimizer's state
    scalars: tuple[str, ...] = getattr(inner, "scalar_state_keys", ())
    for index, (group, saved) in enumerate(zip(groups, saved_groups)):
        if len(group["params"]) != len(saved["params"]):
            raise ValueError(
                f"loaded state dict's parameter group {index} has {len(saved['params'])} "
                f"parameters, the optimizer's has {len(group['params'])}"
            )
        needed = _needed_keys(optimizer, saved, index)
        for position, (param, saved_id) in enumerate(zip(group["params"], saved["params"])):
            entry = saved_state.get(saved_id, {})
            if not isinstance(entry, Mapping):
                raise ValueError(
                    f"state of parameter {position} in group {index} is a "
                    f"{type(entry).__name__}, not a dict"
                )
            _check_keys(entry, needed, optimizer, f"parameter {position} in group {index}",
                        scalars)
            _check_count(entry, optimizer, f"parameter {position} in group {index}")
            for key, value in entry.items():
                where = f"state {key!r} of parameter {position} in group {index}"
                if key == "step":
                    _check_step(value, where)
                    continue
                if key in scalars:  # one number per parameter (NAdam's mu_product)
                    if not isinstance(value, float | Tensor) or (
                            isinstance(value, Tensor) and value.numel() != 1):
                        raise ValueError(f"{where} must be one number, got {value!r}")
                    continue
                if formats.is_scales(key, entry):
                    _check_scales(value, entry[formats.codes_key(key)], param, where)
                    continue
                if not isinstance(value, Tensor):
                    continue
                if value.shape != param.shape:
                    foreign = needed and key not in needed and formats.scales_key(key) not in entry
                    raise ValueError(
                        f"{where} has shape {tuple(value.shape)}, the parameter has shape "
                        f"{tuple(param.shape)}" + (
                            f" ({key!r} is no state of {type(optimizer).__name__}: a checkpoint "
                            "of another optimizer?)" if foreign else "")
                    )
                encoded = formats.scales_key(key) in entry
                if (value.dtype != torch.uint8) if encoded else (
                    value.is_complex() != param.is_complex()
                    or (param.is_floating_point() and not value.is_floating_point())
                ):
                    raise ValueError(
                        f"{where} has dtype {value.dtype}, the parameter has dtype {param.dtype}"
                    )


def _needed_keys(optimizer: torch.optim.Optimizer, saved: Mapping[str, Any],
                 index: int) -> tuple[str, ...]:
    """The state tensors the optimizer's rule needs under the saved group's hyperparameters
    (none for an optimizer without a rule, e.g. a wrapper, whose inner one checks its own)."""
    rule = getattr(optimizer, "rule", None)
    if rule is None:
        return ()
    group = {**optimizer.defaults, **{k: v for k, v in saved.items() if k != "params"}}
    try:
        return tuple(rule.state_keys(group))
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"loaded state dict's parameter group {index} has hyperparameters "
            f"{type(optimizer).__name__} cannot use: {error!r}"
        ) from None


def _check_keys(entry: Mapping[str, Any], needed: tuple[str, ...],
                optimizer: torch.optim.Optimizer, where: str, scalars: tuple[str, ...]) -> None:
    if not entry:
        return
    missing = [key for key in needed if not isinstance(entry.get(key), Tensor)]
    if not missing:
        return
    other = sorted(str(key) for key in entry if key != "step" and key not in needed
                   and key not in scalars and not formats.is_scales(key, entry))
    found = f"has {', '.join(map(repr, other))} and " if other else ""
    raise ValueError(
        f"state of {where} {found}lacks {', '.join(map(repr, missing))}, which "
        f"{type(optimizer).__name__} needs: a checkpoint of another optimizer, or an incomplete "
        "one"
    )


def _check_count(entry: Mapping[str, Any], optimizer: torch.optim.Optimizer,
                 where: str) -> None:
    rule = getattr(optimizer, "rule", None)
    if (rule is None or rule.counts_from_state or "step" in entry
            or not any(isinstance(value, Tensor) for value in entry.values())):
        return
    raise ValueError(
        f"state of {where} has no 'step': {type(optimizer).__name__} needs the step count its "
        "state was made at (a checkpoint edited, or of another optimizer)")


def _check_step(value: Any, where: str) -> None:
    """A step counter: a whole number >= 0, as a Python number or a one-element real tensor."""
    number: float | None = None
    if isinstance(value, Tensor):
        if value.numel() == 1 and not value.is_complex() and value.dtype != torch.bool:
            number = float(value.item())
        shown = f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}" \
            if number is None else repr(number)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        shown = repr(value)
    else:
        shown = repr(value)
    if number is None or not math.isfinite(number) or number < 0 or number != int(number):
        raise ValueError(f"{where} is {shown}; expected a whole number >= 0")


def _check_scales(scales: Any, codes: Any, param: Tensor, where: str) -> None:
    """The float32 block scales of 8-bit codes (:mod:`rectified.formats.codes`)."""
    shape = formats.scales_shape(param)
    if not isinstance(scales, Tensor):
        raise ValueError(f"{where} is a {type(scales).__name__}; the scales of 8-bit codes are "
                         f"a float32 tensor of shape {shape}")
    if not isinstance(codes, Tensor) or codes.dtype != torch.uint8:
        raise ValueError(f"{where} are the scales of 8-bit codes, but its codes are not uint8")
    if scales.dtype != torch.float32 or tuple(scales.shape) != shape:
        note = " (sharded as the parameter is: see rectified.formats.sharded)" if (
            sharded.is_dtensor(param)) else ""
        raise ValueError(
            f"{where} has dtype {scales.dtype} and shape {tuple(scales.shape)}; the scales of a "
            f"parameter of {param.numel()} elements are float32 of shape {shape}{note}")
    if param.is_complex() or not param.is_floating_point():
        raise ValueError(f"{where}: 8-bit state is only for real floating-point parameters")
    local = cast(Any, scales).to_local() if sharded.is_dtensor(scales) else scales
    if not bool(torch.isfinite(local).all()):
        raise ValueError(f"{where} holds inf or NaN; a block's scale is a finite number (its "
                         "sign marks a block with non-finite values)")
    if sharded.is_dtensor(scales) and sharded.blocked_elsewhere(scales, param):
        raise ValueError(
            f"{where} belong to another sharding than the parameter's (its rows name other "
            "shards): an 8-bit checkpoint of sharded parameters loads into the sharding it "
            "was saved from")
