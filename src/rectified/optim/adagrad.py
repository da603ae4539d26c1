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
from rectified.rules import adagrad as adagrad_rule


class Adagrad(RuleOptimizer):
    __doc__ = with_algorithm(
        "AdaGrad; a drop-in for ``torch.optim.Adagrad`` (dense gradients).",
        adagrad_rule,
        f"""
        Args:
            params: iterable of tensors, of ``(name, tensor)`` pairs, or of param-group dicts.
            lr (float or Tensor): learning rate γ (default 1e-2).
            lr_decay (float): learning-rate decay η (default 0).
            weight_decay (float): L2 penalty λ (default 0).
            initial_accumulator_value (float): starting value of S (default 0).
            eps (float): term added to the denominator (default 1e-10).
        {COMMON_ARGS}
        """,
    )

    rule = adagrad_rule.ADAGRAD_RULE

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        skip_nonfinite: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
            foreach=foreach,
            maximize=maximize,
            skip_nonfinite=skip_nonfinite,
        )
        super().__init__(params, defaults)

    def validate_group(self, group: Mapping[str, Any]) -> None:
        check_lr(group["lr"])
        check_in_range("lr_decay", group["lr_decay"], 0.0, float("inf"))
        check_weight_decay(group["weight_decay"])
        check_in_range("initial_accumulator_value", group["initial_accumulator_value"], 0.0,
                       float("inf"))
        check_eps(group["eps"])
        check_bool("maximize", group["maximize"])
