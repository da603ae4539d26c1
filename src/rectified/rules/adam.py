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

from rectified.rules.base import TensorList, TensorListOps, UpdateRule, scalar, zeros_like
from rectified.rules.moments import AdamStep, bias_corrections


def adam_moment_keys(amsgrad: bool) -> tuple[str, ...]:
    return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if amsgrad else ("exp_avg", "exp_avg_sq")


def betas_of(group: Mapping[str, Any]) -> tuple[float, float]:
    beta1, beta2 = group["betas"]
    return scalar(beta1), scalar(beta2)


def weight_decay_operands(group: Mapping[str, Any], lr: float) -> dict[str, Any]:
    """``decay`` (decoupled: θ <- θ (1 - γλ)) or ``weight_decay`` (coupled: g <- g + λθ), and
    ``maximize``: the operands every Adam-family step takes from its group."""
    wd = group["weight_decay"]
    if group["decoupled_weight_decay"]:
        return {"decay": 1.0 - lr * wd if wd != 0 else 1.0, "maximize": group["maximize"]}
    return {"weight_decay": wd, "maximize": group["maximize"]}


class AdamRule(UpdateRule):
    name = "Adam"
    fused_by_default = True
    # The moments of every weight move at every step: no sparse update that equals the
    # dense one; torch's SparseAdam (lazy moments of the touched rows) is the alternative.
    sparse_hint = ", please consider SparseAdam instead"

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
        lr = scalar(group["lr"])
        beta1, beta2 = betas_of(group)
        bc = bias_corrections(step, beta1, beta2)
        operands = AdamStep(
            beta1=beta1, beta2=beta2, step_size=lr / bc.first, eps=group["eps"],
            denom_scale=bc.second_sqrt, **weight_decay_operands(group, lr),
        )
        ops.adam_step_(params, grads, state["exp_avg"], state["exp_avg_sq"],
                       state.get("max_exp_avg_sq"), operands)


ADAM_RULE = AdamRule()
