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
from rectified.rules import rmsprop as rmsprop_rule


class RMSprop(RuleOptimizer):
    __doc__ = with_algorithm(
        "RMSProp, optionally centered and with momentum; a drop-in for ``torch.optim.RMSprop``.",
        rmsprop_rule,
        f"""
        Args:
            params: iterable of tensors, of ``(name, tensor)`` pairs, or of param-group dicts.
            lr (float or Tensor): learning rate γ (default 1e-2).
            alpha (float): smoothing constant α of the squared-gradient average, in [0, 1]
                (default 0.99).
            eps (float): term added to the denominator (default 1e-8).
            weight_decay (float): L2 penalty λ (default 0).
            momentum (float): momentum factor μ (default 0).
            centered (bool): normalise by the estimated variance of the gradient (default False).
        {COMMON_ARGS}
        """,
    )

    rule = rmsprop_rule.RMSPROP_RULE

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        skip_nonfinite: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
            foreach=foreach,
            maximize=maximize,
            skip_nonfinite=skip_nonfinite,
        )
        super().__init__(params, defaults)

    def validate_group(self, group: Mapping[str, Any]) -> None:
        check_lr(group["lr"])
        check_eps(group["eps"])
        check_in_range("momentum", group["momentum"], 0.0, float("inf"))
        check_weight_decay(group["weight_decay"])
        check_in_range("alpha", group["alpha"], 0.0, 1.0, high_open=False)
        check_bool("centered", group["centered"])
        check_bool("maximize", group["maximize"])
