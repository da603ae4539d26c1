"""AdaDelta: steps scaled by the ratio of RMS past updates to RMS past gradients.

    g_t = ∇f(θ_{t-1}) (+ λ θ_{t-1})                  (negated under maximize)
    E[g²]_t = ρ E[g²]_{t-1} + (1 - ρ) g_t²
    Δ_t = √(E[Δ²]_{t-1} + ε) / √(E[g²]_t + ε) · g_t
    E[Δ²]_t = ρ E[Δ²]_{t-1} + (1 - ρ) Δ_t²
    θ_t = θ_{t-1} - γ Δ_t                             (γ = 1 in the paper)

Zeiler, "ADADELTA: An Adaptive Learning Rate Method" (arXiv 1212.5701). Matches
``torch.optim.Adadelta``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from rectified.rules.base import (
    TensorList,
    TensorListOps,
    UpdateRule,
    effective_gradients,
    scalar,
    zeros_like,
)


class AdadeltaRule(UpdateRule):
    name = "Adadelta"

    def state_keys(self, group: Mapping[str, Any]) -> tuple[str, ...]:
        return ("square_avg", "acc_delta")

    def init_state(self, param: Tensor, group: Mapping[str, Any]) -> dict[str, Tensor]:
        return {"square_avg": zeros_like(param), "acc_delta": zeros_like(param)}

    def update_(
        self,
        ops: TensorListOps,
        params: TensorList,
        grads: TensorList,
        state: dict[str, TensorList],
        group: Mapping[str, Any],
        step: int,
    ) -> None:
        lr, rho, eps = scalar(group["lr"]), group["rho"], group["eps"]
        grads = effective_gradients(
            ops, params, grads, maximize=group["maximize"], weight_decay=group["weight_decay"]
        )
        square_avg, acc_delta = state["square_avg"], state["acc_delta"]
        ops.mul_(square_avg, rho)
        ops.addcmul_(square_avg, grads, grads, 1 - rho)
        std = ops.clone(square_avg)
        ops.add_scalar_(std, eps)
        std = ops.sqrt(std)
        delta = ops.clone(acc_delta)
        ops.add_scalar_(delta, eps)
        delta = ops.sqrt(delta)
        ops.div_tensors_(delta, std)
        ops.mul_tensors_(delta, grads)
        ops.mul_(acc_delta, rho)
        ops.addcmul_(acc_delta, delta, delta, 1 - rho)
        ops.add_(params, delta, alpha=-lr)


ADADELTA_RULE = AdadeltaRule()
