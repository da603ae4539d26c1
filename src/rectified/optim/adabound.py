from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from rectified.formats import DEFAULT_MIN_8BIT_SIZE
from rectified.optim.base import RuleOptimizer
from rectified.optim.hyperparameters import in_range
from rectified.rules.adabound import ADABOUND_RULE
from rectified.rules.base import scalar


class AdaBound(RuleOptimizer):
    summary = ("AdaBound (and AMSBound with ``amsbound=True``): Adam that turns into SGD as "
               "dynamic bounds on the per-element step size close in on ``final_lr``.")
    rule = ADABOUND_RULE

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        final_lr: float = 0.1,
        gamma: float = 1e-3,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsbound: bool = False,
        *,
        decoupled_weight_decay: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        maximize: bool = False,
        skip_nonfinite: bool = False,
        state_dtype: torch.dtype | None = None,
        state_format: str | None = None,
        min_8bit_size: int = DEFAULT_MIN_8BIT_SIZE,
        param_rounding: str = "nearest",
        rounding_seed: int = 0,
    ) -> None:
        super().__init__(params, locals())

    def check_group(self, group: Mapping[str, Any]) -> None:
        if "base_lr" in group:
            in_range("base_lr", 0.0)(group["base_lr"])

    def prepare_group(self, group: dict[str, Any]) -> None:
        group.setdefault("base_lr", scalar(group["lr"]))

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            self.prepare_group(group)
