"""RMSProp: AdaGrad with a moving average of squared gradients instead of their sum.

    g_t = ∇f(θ_{t-1}) (+ λ θ_{t-1})                  (negated under maximize)
    v_t = α v_{t-1} + (1 - α) g_t²
    centered:  ḡ_t = α ḡ_{t-1} + (1 - α) g_t,   s_t = √max(v_t - ḡ_t², 0) + ε
    otherwise: s_t = √v_t + ε
    momentum μ > 0:  b_t = μ b_{t-1} + g_t / s_t,   θ_t = θ_{t-1} - γ b_t
    otherwise:       θ_t = θ_{t-1} - γ g_t / s_t

Tieleman & Hinton, "Lecture 6.5 - RMSProp" (COURSERA: Neural Networks for Machine Learning,
2012); centered form from Graves, "Generating Sequences With Recurrent Neural Networks" (2013).
Matches ``torch.optim.RMSprop``.
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


class RMSpropRule(UpdateRule):
    name = "RMSprop"

    def state_keys(self, group: Mapping[str, Any]) -> tuple[str, ...]:
        keys = ["square_avg"]
        if group["momentum"] > 0:
            keys.append("momentum_buffer")
        if group["centered"]:
            keys.append("grad_avg")
        return tuple(keys)

    def init_state(self, param: Tensor, group: Mapping[str, Any]) -> dict[str, Tensor]:
        return {key: zeros_like(param) for key in self.state_keys(group)}

    def update_(
        self,
        ops: TensorListOps,
        params: TensorList,
        grads: TensorList,
        state: dict[str, TensorList],
        group: Mapping[str, Any],
        step: int,
    ) -> None:
        lr, alpha, momentum = scalar(group["lr"]), group["alpha"], group["momentum"]
        grads = effective_gradients(
            ops, params, grads, maximize=group["maximize"], weight_decay=group["weight_decay"]
        )
        square_avg = state["square_avg"]
        ops.mul_(square_avg, alpha)
        ops.addcmul_(square_avg, grads, grads, 1 - alpha)
        if group["centered"]:
            grad_avg = state["grad_avg"]
            ops.lerp_(grad_avg, grads, 1 - alpha)
            avg = ops.clone(square_avg)
            ops.addcmul_(avg, grad_avg, grad_avg, -1.0)
            # v - ḡ² >= 0 in exact arithmetic; rounding can take it below 0 (always at α = 0).
            ops.clamp_(avg, 0.0, float("inf"))
            avg = ops.sqrt(avg)
        else:
            avg = ops.sqrt(square_avg)
        ops.add_scalar_(avg, group["eps"])
        if momentum > 0:
            buffers = state["momentum_buffer"]
            ops.mul_(buffers, momentum)
            ops.addcdiv_(buffers, grads, avg, 1.0)
            ops.add_(params, buffers, alpha=-lr)
        else:
            ops.addcdiv_(params, grads, avg, -lr)


RMSPROP_RULE = RMSpropRule()
