from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rectified.formats import DEFAULT_MIN_8BIT_SIZE
from rectified.optim.base import RuleOptimizer
from rectified.rules import radam as radam_rule


class RAdam(RuleOptimizer):
    summary = ("Rectified Adam (RAdam); a drop-in for ``torch.optim.RAdam`` whose checkpoints "
               "load both ways, with the paper's choices as explicit parameters.")
    rule = radam_rule.RADAM_RULE

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        *,
        threshold: float = radam_rule.DEFAULT_THRESHOLD,
        degenerated_to_sgd: bool = True,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        skip_nonfinite: bool = False,
        state_dtype: torch.dtype | None = None,
        state_format: str | None = None,
        min_8bit_size: int = DEFAULT_MIN_8BIT_SIZE,
        param_rounding: str = "nearest",
        rounding_seed: int = 0,
    ) -> None:
        super().__init__(params, locals())
