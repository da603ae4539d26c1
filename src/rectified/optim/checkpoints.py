"""Checking and copying checkpoints before they are loaded into an optimizer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor


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
    different float width is cast on load, as torch.optim does).
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
    for index, (group, saved) in enumerate(zip(groups, saved_groups)):
        if len(group["params"]) != len(saved["params"]):
            raise ValueError(
                f"loaded state dict's parameter group {index} has {len(saved['params'])} "
                f"parameters, the optimizer's has {len(group['params'])}"
            )
        for position, (param, saved_id) in enumerate(zip(group["params"], saved["params"])):
            for key, value in saved_state.get(saved_id, {}).items():
                if not isinstance(value, Tensor) or key == "step":
                    continue
                where = f"state {key!r} of parameter {position} in group {index}"
                if value.shape != param.shape:
                    raise ValueError(
                        f"{where} has shape {tuple(value.shape)}, the parameter has shape "
                        f"{tuple(param.shape)}"
                    )
                if value.is_complex() != param.is_complex() or (
                    param.is_floating_point() and not value.is_floating_point()
                ):
                    raise ValueError(
                        f"{where} has dtype {value.dtype}, the parameter has dtype {param.dtype}"
                    )
