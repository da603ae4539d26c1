from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from rectified.optim._doc import COMMON_ARGS, FUSED_ARGS, with_algorithm
from rectified.optim.adam import ADAM_ARGS, check_adam_family
from rectified.optim.base import RuleOptimizer
from rectified.optim.validation import check_bool
from rectified.rules import radam as radam_rule


def check_threshold(threshold: Any) -> None:
    if not isinstance(threshold, int | float) or threshold < radam_rule.PAPER_THRESHOLD:
        raise ValueError(f"Invalid threshold value: {threshold} (r_t needs rho_t > 4)")


class RAdam(RuleOptimizer):
    __doc__ = with_algorithm(
        "Rectified Adam (RAdam); a drop-in for ``torch.optim.RAdam`` whose checkpoints load "
        "both ways, with the paper's choices as explicit parameters.",
        radam_rule,
        f"""
        Args:
        {ADAM_ARGS}
            weight_decay (float): weight decay λ (default 0); coupled (L2) unless
                ``decoupled_weight_decay``.
            decoupled_weight_decay (bool): AdamW-style decay θ <- θ (1 - γλ) (default False).
            threshold (float): rectify when ρ_t > threshold (default 5.0 as torch.optim and the
                authors' code; 4.0 gives the paper's Algorithm 2). Must be >= 4.
            degenerated_to_sgd (bool): below the threshold take the bias-corrected momentum
                step (default True); False leaves the parameter unchanged there.
        {FUSED_ARGS}
        {COMMON_ARGS}
        """,
    )

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
        fused: bool | None = None,
        maximize: bool = False,
        skip_nonfinite: bool = False,
        state_dtype: torch.dtype | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            threshold=threshold,
            degenerated_to_sgd=degenerated_to_sgd,
            foreach=foreach,
            fused=fused,
            maximize=maximize,
            skip_nonfinite=skip_nonfinite,
            state_dtype=state_dtype,
        )
        super().__init__(params, defaults)

    def validate_group(self, group: Mapping[str, Any]) -> None:
        check_adam_family(group)
        check_threshold(group["threshold"])
        check_bool("degenerated_to_sgd", group["degenerated_to_sgd"])
