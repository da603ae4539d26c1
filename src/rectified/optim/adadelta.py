from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from rectified.optim._doc import COMMON_ARGS, with_algorithm
from rectified.optim.base import RuleOptimizer
from rectified.optim.validation import (
    check_bool,
    check_eps,
    check_in_range,
    check_lr,
    check_weight_decay,
)
from rectified.rules import adadelta as adadelta_rule


class Adadelta(RuleOptimizer):
    __doc__ = with_algorithm(
        "AdaDelta; a drop-in for ``torch.optim.Adadelta``.",
        adadelta_rule,
        f"""
        Args:
            params: iterable of tensors, of ``(name, tensor)`` pairs, or of param-group dicts.
            lr (float or Tensor): coefficient γ that scales Δ (default 1.0).
            rho (float): decay ρ of both running averages, in [0, 1] (default 0.9).
            eps (float): term inside the square roots (default 1e-6).
            weight_decay (float): L2 penalty λ (default 0).
        {COMMON_ARGS}
        """,
    )

    rule = adadelta_rule.ADADELTA_RULE

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        skip_nonfinite: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, foreach=foreach, maximize=maximize,
            skip_nonfinite=skip_nonfinite,
        )
        super().__init__(params, defaults)

    def validate_group(self, group: Mapping[str, Any]) -> None:
        check_lr(group["lr"])
        check_in_range("rho", group["rho"], 0.0, 1.0, high_open=False)
        check_eps(group["eps"])
        check_weight_decay(group["weight_decay"])
        check_bool("maximize", group["maximize"])
