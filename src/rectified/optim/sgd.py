from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from rectified.optim._doc import COMMON_ARGS, with_algorithm
from rectified.optim.base import RuleOptimizer
from rectified.optim.validation import check_bool, check_in_range, check_lr, check_weight_decay
from rectified.rules import sgd as sgd_rule


class SGD(RuleOptimizer):
    __doc__ = with_algorithm(
        "Stochastic gradient descent with optional (Nesterov) momentum; a drop-in for "
        "``torch.optim.SGD`` (dense gradients).",
        sgd_rule,
        f"""
        Args:
            params: iterable of tensors, of ``(name, tensor)`` pairs, or of param-group dicts.
            lr (float or Tensor): learning rate γ (default 1e-3).
            momentum (float): momentum factor μ (default 0).
            dampening (float): dampening τ of the momentum (default 0).
            weight_decay (float): L2 penalty λ (default 0).
            nesterov (bool): Nesterov momentum (default False; needs momentum > 0 and no
                dampening).
        {COMMON_ARGS}
        """,
    )

    rule = sgd_rule.SGD_RULE

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
        skip_nonfinite: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            foreach=foreach,
            skip_nonfinite=skip_nonfinite,
        )
        super().__init__(params, defaults)

    def validate_group(self, group: Mapping[str, Any]) -> None:
        check_lr(group["lr"])
        check_in_range("momentum", group["momentum"], 0.0, float("inf"))
        check_in_range("dampening", group["dampening"], 0.0, 1.0, high_open=False)
        check_weight_decay(group["weight_decay"])
        check_bool("nesterov", group["nesterov"])
        check_bool("maximize", group["maximize"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
