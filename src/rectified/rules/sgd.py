"""Stochastic gradient descent with momentum, dampening and Nesterov momentum.

    g_t = ∇f(θ_{t-1}) (+ λ θ_{t-1})                  (negated under maximize)
    b_1 = g_1,   b_t = μ b_{t-1} + (1 - τ) g_t        (momentum μ, dampening τ)
    d_t = g_t + μ b_t  (Nesterov)   or   d_t = b_t
    θ_t = θ_{t-1} - γ d_t

Polyak (1964); Sutskever et al., "On the importance of initialization and momentum in deep
learning" (ICML 2013) for the Nesterov form. Matches ``torch.optim.SGD``.

Sparse gradients (e.g. from ``nn.Embedding(sparse=True)``) take the same step, with a dense
momentum buffer (equal in value to torch's sparse one); weight decay would make the gradient
dense, so it is refused with them, as in torch.optim.
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


class SGDRule(UpdateRule):
    name = "SGD"
    supports_sparse = True
    counts_from_state = True

    def state_keys(self, group: Mapping[str, Any]) -> tuple[str, ...]:
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def init_state(self, param: Tensor, group: Mapping[str, Any]) -> dict[str, Tensor]:
        return {"momentum_buffer": zeros_like(param)} if group["momentum"] != 0 else {}

    def update_(
        self,
        ops: TensorListOps,
        params: TensorList,
        grads: TensorList,
        state: dict[str, TensorList],
        group: Mapping[str, Any],
        step: int,
    ) -> None:
        lr, momentum = scalar(group["lr"]), group["momentum"]
        grads = effective_gradients(
            ops, params, grads, maximize=group["maximize"], weight_decay=group["weight_decay"]
        )
        if momentum != 0:
            buffers = state["momentum_buffer"]
            if step == 1:
                ops.copy_(buffers, grads)
            else:
                ops.mul_(buffers, momentum)
                ops.add_(buffers, grads, alpha=1 - group["dampening"])
            grads = ops.add(grads, buffers, alpha=momentum) if group["nesterov"] else buffers
        ops.add_(params, grads, alpha=-lr)

    def check_sparse(self, group: Mapping[str, Any], owner: str) -> None:
        if group["weight_decay"] != 0:
            raise RuntimeError(f"{owner}: weight_decay option is not compatible with sparse "
                               "gradients")

    def sparse_update_(
        self, param: Tensor, grad: Tensor, state: dict[str, Tensor], group: Mapping[str, Any],
        step: int,
    ) -> None:
        momentum = group["momentum"]
        if group["maximize"]:
            grad = -grad
        direction = grad
        if momentum != 0:
            buffer = state["momentum_buffer"]
            if step == 1:
                buffer.zero_().add_(grad)
            else:
                buffer.mul_(momentum).add_(grad, alpha=1 - group["dampening"])
            direction = buffer.mul(momentum).add_(grad) if group["nesterov"] else buffer
        param.add_(direction, alpha=-scalar(group["lr"]))


SGD_RULE = SGDRule()
