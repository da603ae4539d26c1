from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from rectified.optim._doc import COMMON_ARGS, FUSED_ARGS, with_algorithm
from rectified.optim.adam import ADAM_ARGS, check_adam_family
from rectified.optim.base import RuleOptimizer
from rectified.optim.validation import check_bool, check_in_range
from rectified.rules import adabound as adabound_rule
from rectified.rules.base import scalar


class AdaBound(RuleOptimizer):
    __doc__ = with_algorithm(
        "AdaBound (and AMSBound with ``amsbound=True``): Adam that turns into SGD as dynamic "
        "bounds on the per-element step size close in on ``final_lr``.",
        adabound_rule,
        f"""
        Args:
        {ADAM_ARGS}
            final_lr (float): the SGD learning rate the bounds converge to (default 0.1). It is
                scaled by lr / base_lr, where ``base_lr`` (stored in each group) is the group's
                lr when it was added, so lr schedulers move the bounds too.
            gamma (float): convergence speed of the bounds, in [0, 1) (default 1e-3).
            weight_decay (float): weight decay λ (default 0); coupled unless
                ``decoupled_weight_decay``.
            amsbound (bool): use the running maximum of v (AMSBound, default False).
            decoupled_weight_decay (bool): AdamW-style decay (default False).
        {FUSED_ARGS}
        {COMMON_ARGS}
        """,
    )

    rule = adabound_rule.ADABOUND_RULE

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
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            final_lr=final_lr,
            gamma=gamma,
            eps=eps,
            weight_decay=weight_decay,
            amsbound=amsbound,
            decoupled_weight_decay=decoupled_weight_decay,
            foreach=foreach,
            fused=fused,
            maximize=maximize,
            skip_nonfinite=skip_nonfinite,
            state_dtype=state_dtype,
        )
        super().__init__(params, defaults)

    def validate_group(self, group: Mapping[str, Any]) -> None:
        check_adam_family(group)
        check_in_range("final_lr", group["final_lr"], 0.0, float("inf"))
        check_in_range("gamma", group["gamma"], 0.0, 1.0)
        check_bool("amsbound", group["amsbound"])
        if "base_lr" in group:
            check_in_range("base_lr", group["base_lr"], 0.0, float("inf"))

    def prepare_group(self, group: dict[str, Any]) -> None:
        group.setdefault("base_lr", scalar(group["lr"]))

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            self.prepare_group(group)
