from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from rectified.optim.base import RuleOptimizer
from rectified.rules.adadelta import ADADELTA_RULE


class Adadelta(RuleOptimizer):
    summary = "AdaDelta; a drop-in for ``torch.optim.Adadelta``."
    rule = ADADELTA_RULE
    arg_docs: ClassVar[dict[str, str]] = {
        "lr": "coefficient γ that scales Δ", "eps": "ε inside the square roots"
    }

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        skip_nonfinite: bool = False,
    ) -> None:
        super().__init__(params, locals())
