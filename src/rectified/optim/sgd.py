from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from rectified.optim.base import RuleOptimizer
from rectified.rules.sgd import SGD_RULE


class SGD(RuleOptimizer):
    summary = ("Stochastic gradient descent with optional (Nesterov) momentum; a drop-in for "
               "``torch.optim.SGD``.")
    rule = SGD_RULE

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
        skip_nonfinite: bool = False,
    ) -> None:
        super().__init__(params, locals())

    def check_group(self, group: Mapping[str, Any]) -> None:
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
