from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from rectified.formats import DEFAULT_MIN_8BIT_SIZE
from rectified.optim.base import RuleOptimizer, with_defaults
from rectified.rules.adam import ADAM_RULE


class Adam(RuleOptimizer):
    summary = ("Adam, with AMSGrad and decoupled weight decay as options; a drop-in for "
               "``torch.optim.Adam`` whose checkpoints load both ways.")
    rule = ADAM_RULE

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
        skip_nonfinite: bool = False,
        state_dtype: torch.dtype | None = None,
        state_format: str | None = None,
        min_8bit_size: int = DEFAULT_MIN_8BIT_SIZE,
        param_rounding: str = "nearest",
        rounding_seed: int = 0,
    ) -> None:
        super().__init__(params, locals())

    def check_group(self, group: Mapping[str, Any]) -> None:
        check_tensor_hyperparameters(group)


def check_tensor_hyperparameters(group: Mapping[str, Any]) -> None:
    """torch.optim.Adam's rules for Tensor lr and betas (ValueError, torch's messages): betas
    both floats or both Tensors; neither as a Tensor with foreach=True unless capturable."""
    tensor_refused = group.get("foreach") and not group.get("capturable")
    if isinstance(group["lr"], Tensor) and tensor_refused:
        raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True")
    betas = group["betas"]
    if sum(isinstance(beta, Tensor) for beta in betas) == 1:
        raise ValueError("betas must be either both floats or both Tensors")
    for index, beta in enumerate(betas):
        if isinstance(beta, Tensor) and tensor_refused:
            raise ValueError(f"betas[{index}] as a Tensor is not supported for "
                             "capturable=False and foreach=True")


class AdamW(Adam):
    summary = ("AdamW: Adam with decoupled weight decay (default 1e-2); a drop-in for "
               "``torch.optim.AdamW`` whose checkpoints load both ways.")

    __init__ = with_defaults(Adam.__init__, weight_decay=1e-2, decoupled_weight_decay=True)

    def check_group(self, group: Mapping[str, Any]) -> None:
        super().check_group(group)
        if group["decoupled_weight_decay"] is not True:
            raise ValueError("AdamW decouples weight decay by definition "
                             "(decoupled_weight_decay=False is Adam)")

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # AdamW is decoupled by definition, whatever a loaded checkpoint's groups say.
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
