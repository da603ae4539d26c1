"""AdaGrad: each weight's step is normalised by the root of its summed squared gradients.

    g_t = ∇f(θ_{t-1}) (+ λ θ_{t-1})                  (negated under maximize)
    γ_t = γ / (1 + (t - 1) η)                         (lr_decay η)
    S_t = S_{t-1} + g_t²,   S_0 = initial_accumulator_value
    θ_t = θ_{t-1} - γ_t g_t / (√S_t + ε)

Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and Stochastic
Optimization" (JMLR 2011). Matches ``torch.optim.Adagrad`` (dense gradients).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from rectified.rules.base import (
    TensorList,
    TensorListOps,
    UpdateRule,
    effective_gradients,
    scalar,
)


def adagrad_lr(step: int, lr: float, lr_decay: float) -> float:
    """γ_t = γ / (1 + (t - 1) η)."""
    return lr / (1 + (step - 1) * lr_decay)


class AdagradRule(UpdateRule):
    name = "Adagrad"

    def state_keys(self, group: Mapping[str, Any]) -> tuple[str, ...]:
        return ("sum",)

    def init_state(self, param: Tensor, group: Mapping[str, Any]) -> dict[str, Tensor]:
        init = group["initial_accumulator_value"]
        if param.is_complex():  # the real and imaginary parts each accumulate from init
            init = complex(init, init)
        return {"sum": torch.full_like(param, init, memory_format=torch.preserve_format)}

    def update_(
        self,
        ops: TensorListOps,
        params: TensorList,
        grads: TensorList,
        state: dict[str, TensorList],
        group: Mapping[str, Any],
        step: int,
    ) -> None:
        lr = adagrad_lr(step, scalar(group["lr"]), group["lr_decay"])
        grads = effective_gradients(
            ops, params, grads, maximize=group["maximize"], weight_decay=group["weight_decay"]
        )
        sums = state["sum"]
        ops.addcmul_(sums, grads, grads, 1.0)
        std = ops.sqrt(sums)
        ops.add_scalar_(std, group["eps"])
        ops.addcdiv_(params, grads, std, -lr)


ADAGRAD_RULE = AdagradRule()
