"""Adam, AdamW and AMSGrad: one rule.

    g_t = ∇f(θ_{t-1})                                 (negated under maximize)
    coupled decay (Adam):       g_t <- g_t + λ θ_{t-1}
    decoupled decay (AdamW):    θ_{t-1} <- θ_{t-1} (1 - γ λ)
    m_t, v_t as in :mod:`rectified.rules.moments`;   AMSGrad: v_t <- max(v_{t-1}^max, v_t)
    θ_t = θ_{t-1} - γ / (1 - β1^t) · m_t / (√v_t / √(1 - β2^t) + ε)

Kingma & Ba, "Adam: A Method for Stochastic Optimization" (arXiv 1412.6980); Loshchilov &
Hutter, "Decoupled Weight Decay Regularization" (arXiv 1711.05101); Reddi, Kale & Kumar, "On the
Convergence of Adam and Beyond" (ICLR 2018). Matches ``torch.optim.Adam``/``AdamW``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from rectified.rules.base import (
    TensorList,
    TensorListOps,
    UpdateRule,
    decay_weights_,
    effective_gradients,
    scalar,
    zeros_like,
)
from rectified.rules.moments import (
    adaptive_step_,
    bias_corrections,
    second_moment_,
    update_moments_,
)


def adam_moment_keys(amsgrad: bool) -> tuple[str, ...]:
    return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if amsgrad else ("exp_avg", "exp_avg_sq")


def prepare_gradients_(
    ops: TensorListOps, params: TensorList, grads: TensorList, group: Mapping[str, Any]
) -> TensorList:
    """Apply maximize and weight decay (decoupled onto θ, or coupled into g); return g."""
    wd = group["weight_decay"]
    if group["decoupled_weight_decay"]:
        decay_weights_(ops, params, scalar(group["lr"]), wd)
        wd = 0.0
    return effective_gradients(ops, params, grads, maximize=group["maximize"], weight_decay=wd)


class AdamRule(UpdateRule):
    name = "Adam"

    def state_keys(self, group: Mapping[str, Any]) -> tuple[str, ...]:
        return adam_moment_keys(group["amsgrad"])

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
        beta1, beta2 = (scalar(b) for b in group["betas"])
        grads = prepare_gradients_(ops, params, grads, group)
        update_moments_(ops, grads, state["exp_avg"], state["exp_avg_sq"], beta1, beta2)
        second = second_moment_(ops, state["exp_avg_sq"], state, group["amsgrad"])
        bc = bias_corrections(step, beta1, beta2)
        adaptive_step_(
            ops,
            params,
            state["exp_avg"],
            second,
            step_size=scalar(group["lr"]) / bc.first,
            eps=group["eps"],
            denom_scale=bc.second_sqrt,
        )


ADAM_RULE = AdamRule()
