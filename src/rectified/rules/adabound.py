"""AdaBound and AMSBound: Adam whose per-element step size is clipped into bounds that close in
on a final SGD learning rate.

Luo, Xiong, Liu & Sun, "Adaptive Gradient Methods with Dynamic Bound of Learning Rate"
(ICLR 2019, arXiv 1902.09843):

    g_t = ∇f(θ_{t-1}) (+ λ θ_{t-1})                  (negated under maximize; or decoupled decay)
    m_t, v_t as in :mod:`rectified.rules.moments`;   AMSBound: v_t <- max(v_{t-1}^max, v_t)
    α*  = final_lr · γ / γ_0                          (follows lr schedulers: γ_0 = the group's
                                                       lr when it was added, ``base_lr``)
    η_l(t) = α* (1 - 1 / (gamma t + 1)),   η_u(t) = α* (1 + 1 / (gamma t))
    η_t = clip(γ √(1 - β2^t) / ((1 - β1^t)(√v_t + ε)), η_l(t), η_u(t))
    θ_t = θ_{t-1} - η_t ⊙ m_t
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from torch import Tensor

from rectified.rules.adam import adam_moment_keys, betas_of, weight_decay_operands
from rectified.rules.base import TensorList, TensorListOps, UpdateRule, scalar, zeros_like
from rectified.rules.moments import MomentsStep, bias_corrections, gradients_and_moments_


class StepSizeBounds(NamedTuple):
    lower: float
    upper: float


def adabound_bounds(step: int, final_lr: float, gamma: float) -> StepSizeBounds:
    """(final_lr (1 - 1/(gamma t + 1)), final_lr (1 + 1/(gamma t))) at step t >= 1."""
    upper = final_lr * (1 + 1 / (gamma * step)) if gamma * step > 0 else float("inf")
    return StepSizeBounds(final_lr * (1 - 1 / (gamma * step + 1)), upper)


def scaled_final_lr(final_lr: float, lr: float, base_lr: float) -> float:
    """final_lr · lr / base_lr, so a scheduler that scales lr scales the bounds too.

    A group added with lr = 0 has no scale: its bounds use final_lr while lr > 0, and lr = 0
    still means no step.
    """
    if base_lr > 0:
        return final_lr * lr / base_lr
    return final_lr if lr > 0 else 0.0


@dataclass(kw_only=True, slots=True)  # not frozen: a frozen __init__ costs 2 us a tensor
class BoundedStep(MomentsStep):
    """The scalars of one ``bounded_step_``: the moments, then the clipped step
    η = clip(scale / (√v + ε), lower, upper),  θ <- θ - η ⊙ m."""

    eps: float
    scale: float
    lower: float
    upper: float


def bounded_step_(
    ops: TensorListOps,
    params: TensorList,
    grads: TensorList,
    exp_avgs: TensorList,
    exp_avg_sqs: TensorList,
    max_exp_avg_sqs: TensorList | None,
    step: BoundedStep,
) -> None:
    """The meaning of the named operation ``bounded_step_``, in primitives."""
    second = gradients_and_moments_(
        ops, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, step
    )
    step_sizes = ops.sqrt(second)
    ops.add_scalar_(step_sizes, step.eps)
    ops.reciprocal_(step_sizes)
    ops.mul_(step_sizes, step.scale)
    ops.clamp_(step_sizes, step.lower, step.upper)
    ops.mul_tensors_(step_sizes, exp_avgs)
    ops.add_(params, step_sizes, alpha=-1.0)


class AdaBoundRule(UpdateRule):
    name = "AdaBound"
    fused_by_default = True
    sparse_hint = ", please consider SparseAdam instead"

    def state_keys(self, group: Mapping[str, Any]) -> tuple[str, ...]:
        return adam_moment_keys(group["amsbound"])

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
        final_lr = scaled_final_lr(group["final_lr"], lr, group["base_lr"])
        bounds = adabound_bounds(step, final_lr, group["gamma"])
        operands = BoundedStep(
            beta1=beta1, beta2=beta2, eps=group["eps"], scale=lr * bc.second_sqrt / bc.first,
            lower=bounds.lower, upper=bounds.upper, **weight_decay_operands(group, lr),
        )
        ops.bounded_step_(params, grads, state["exp_avg"], state["exp_avg_sq"],
                          state.get("max_exp_avg_sq"), operands)


ADABOUND_RULE = AdaBoundRule()
