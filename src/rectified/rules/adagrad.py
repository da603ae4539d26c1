"""AdaGrad: each weight's step is normalised by the root of its summed squared gradients.

    g_t = ∇f(θ_{t-1}) (+ λ θ_{t-1})                  (negated under maximize)
    γ_t = γ / (1 + (t - 1) η)                         (lr_decay η)
    S_t = S_{t-1} + g_t²,   S_0 = initial_accumulator_value
    θ_t = θ_{t-1} - γ_t g_t / (√S_t + ε)

Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and Stochastic
Optimization" (JMLR 2011). Matches ``torch.optim.Adagrad``.

A sparse gradient (e.g. from ``nn.Embedding(sparse=True)``, the sparse features AdaGrad was made
for) updates only the rows it touches: S and θ of the other rows are left as they are, as in
torch.optim. Weight decay would touch every row, so it is refused with sparse gradients.
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
    supports_sparse = True

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

    def check_sparse(self, group: Mapping[str, Any], owner: str) -> None:
        if group["weight_decay"] != 0:
            raise RuntimeError("weight_decay option is not compatible with sparse gradients")

    def sparse_update_(
        self, param: Tensor, grad: Tensor, state: dict[str, Tensor], group: Mapping[str, Any],
        step: int,
    ) -> None:
        lr = adagrad_lr(step, scalar(group["lr"]), group["lr_decay"])
        if group["maximize"]:
            grad = -grad
        grad = grad.coalesce()  # each touched row once, its contributions summed
        rows, values = tuple(grad.indices()), grad.values()
        sums = state["sum"]
        sums.index_put_(rows, values.square(), accumulate=True)
        std = sums[rows].sqrt_().add_(group["eps"])
        param.index_put_(rows, values.div(std).mul_(-lr), accumulate=True)


ADAGRAD_RULE = AdagradRule()
