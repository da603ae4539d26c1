from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from rectified.optim._doc import COMMON_ARGS, FUSED_ARGS, with_algorithm
from rectified.optim.base import RuleOptimizer
from rectified.optim.validation import (
    check_betas,
    check_bool,
    check_eps,
    check_lr,
    check_weight_decay,
)
from rectified.rules import adam as adam_rule


def check_adam_family(group: Mapping[str, Any]) -> None:
    """The checks every Adam-family group shares (lr, betas, eps, weight decay, flags)."""
    check_lr(group["lr"])
    check_eps(group["eps"])
    check_betas(group["betas"])
    check_weight_decay(group["weight_decay"])
    check_bool("maximize", group["maximize"])
    check_bool("decoupled_weight_decay", group["decoupled_weight_decay"])


ADAM_ARGS = """\
    params: iterable of tensors, of ``(name, tensor)`` pairs, or of param-group dicts.
    lr (float or Tensor): learning rate γ (default 1e-3).
    betas (tuple[float, float]): β1, β2 of the moving moments (default (0.9, 0.999)).
    eps (float): term added to the denominator (default 1e-8)."""


class Adam(RuleOptimizer):
    __doc__ = with_algorithm(
        "Adam, with AMSGrad and decoupled weight decay as options; a drop-in for "
        "``torch.optim.Adam`` whose checkpoints load both ways.",
        adam_rule,
        f"""
        Args:
        {ADAM_ARGS}
            weight_decay (float): weight decay λ (default 0); coupled (L2) unless
                ``decoupled_weight_decay``.
            amsgrad (bool): use the running maximum of v (AMSGrad, default False).
            decoupled_weight_decay (bool): AdamW-style decay θ <- θ (1 - γλ) (default False).
        {FUSED_ARGS}
        {COMMON_ARGS}
        """,
    )

    rule = adam_rule.ADAM_RULE

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
        skip_nonfinite: bool = False,
        state_dtype: torch.dtype | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            foreach=foreach,
            fused=fused,
            maximize=maximize,
            decoupled_weight_decay=decoupled_weight_decay,
            skip_nonfinite=skip_nonfinite,
            state_dtype=state_dtype,
        )
        super().__init__(params, defaults)

    def validate_group(self, group: Mapping[str, Any]) -> None:
        check_adam_family(group)
        check_bool("amsgrad", group["amsgrad"])


class AdamW(Adam):
    __doc__ = with_algorithm(
        "AdamW: Adam with decoupled weight decay (default 1e-2); a drop-in for "
        "``torch.optim.AdamW`` whose checkpoints load both ways.",
        adam_rule,
        f"""
        Args:
        {ADAM_ARGS}
            weight_decay (float): decoupled weight decay λ, θ <- θ (1 - γλ) (default 1e-2).
            amsgrad (bool): use the running maximum of v (AMSGrad, default False).
        {FUSED_ARGS}
        {COMMON_ARGS}
        """,
    )

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
        maximize: bool = False,
        skip_nonfinite: bool = False,
        state_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            foreach=foreach,
            fused=fused,
            maximize=maximize,
            decoupled_weight_decay=True,
            skip_nonfinite=skip_nonfinite,
            state_dtype=state_dtype,
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # AdamW is decoupled by definition, whatever a loaded checkpoint's groups say.
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
