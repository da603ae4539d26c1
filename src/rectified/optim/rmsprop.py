from __future__ import annotations

from typing import Any

from torch import Tensor

from rectified.optim.base import RuleOptimizer
from rectified.rules.rmsprop import RMSPROP_RULE


class RMSprop(RuleOptimizer):
    summary = ("RMSProp, optionally centered and with momentum; a drop-in for "
               "``torch.optim.RMSprop``.")
    rule = RMSPROP_RULE

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        *,
        fused: bool | None = None,
        skip_nonfinite: bool = False,
    ) -> None:
        super().__init__(params, locals())
