"""NAdam: Adam whose step looks ahead along the momentum, as Nesterov's method does.

Dozat, "Incorporating Nesterov Momentum into Adam" (ICLR 2016 workshop), with the momentum
schedule and decoupled weight decay option of ``torch.optim.NAdam``. With ψ = momentum_decay:

    g_t = ∇f(θ_{t-1})                                 (negated under maximize)
    weight decay: coupled g_t <- g_t + λ θ_{t-1}, or decoupled θ_{t-1} <- θ_{t-1} (1 - γ λ)
    μ_t = β1 (1 - ½ · 0.96^(t ψ))                     (momentum schedule)
    Π_t = μ_1 μ_2 ⋯ μ_t
    m_t, v_t as in :mod:`rectified.rules.moments`,    v̂_t = v_t / (1 - β2^t)
    θ_t = θ_{t-1} - γ (1 - μ_t) / (1 - Π_t) · g_t / (√v̂_t + ε)
                  - γ μ_{t+1} / (1 - Π_t μ_{t+1}) · m_t / (√v̂_t + ε)

Π_t is the product of the μ each parameter has been stepped with, as torch.optim.NAdam keeps
it (``mu_product``, in its step counter's dtype), so it follows β1 and ψ changed mid-run. The
optimizer (:class:`rectified.optim.NAdam`) keeps it per parameter and hands the rule, for the
step, Π_t of each step count under :data:`PRODUCTS`; the rule holds no per-element state beyond
m and v. Without that entry Π_t is :func:`momentum_product`, μ_1 ⋯ μ_t at the current β1, ψ.
Matches ``torch.optim.NAdam``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from torch import Tensor

from rectified.rules.adam import betas_of, weight_decay_operands
from rectified.rules.base import TensorList, TensorListOps, UpdateRule, scalar, zeros_like
from rectified.rules.moments import (
    MomentsStep,
    bias_corrections,
    decayed_gradients_,
    update_moments_,
)

DEFAULT_MOMENTUM_DECAY = 4e-3
# group key, present during a step: {step count t: Π_t} of the group's parameters
PRODUCTS = "mu_products"


def momentum_coefficient(step: int, beta1: float, momentum_decay: float) -> float:
    """μ_t = β1 (1 - ½ · 0.96^(t ψ))."""
    return beta1 * (1.0 - 0.5 * 0.96 ** (float(step) * momentum_decay))


def momentum_product(step: int, beta1: float, momentum_decay: float) -> float:
    """Π_t = μ_1 ⋯ μ_t (1 at t = 0), with β1 and ψ fixed."""
    product = 1.0
    for t in range(1, step + 1):
        product *= momentum_coefficient(t, beta1, momentum_decay)
    return product


class NAdamCoefficients(NamedTuple):
    gradient: float  # γ (1 - μ_t) / (1 - Π_t)
    momentum: float  # γ μ_{t+1} / (1 - Π_t μ_{t+1})


def nadam_coefficients(step: int, lr: float, beta1: float, momentum_decay: float,
                       product: float | None = None) -> NAdamCoefficients:
    """The step sizes of the gradient and of the momentum at step t >= 1, with Π_t =
    ``product`` (default :func:`momentum_product`)."""
    mu = momentum_coefficient(step, beta1, momentum_decay)
    mu_next = momentum_coefficient(step + 1, beta1, momentum_decay)
    if product is None:
        product = momentum_product(step, beta1, momentum_decay)
    return NAdamCoefficients(lr * (1.0 - mu) / (1.0 - product),
                             lr * mu_next / (1.0 - product * mu_next))


class NAdamRule(UpdateRule):
    name = "NAdam"

    def state_keys(self, group: Mapping[str, Any]) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def init_state(self, param: Tensor, group: Mapping[str, Any]) -> dict[str, Tensor]:
        return {"exp_avg": zeros_like(param), "exp_avg_sq": zeros_like(param)}

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
        coefficients = nadam_coefficients(step, lr, beta1, group["momentum_decay"],
                                          group.get(PRODUCTS, {}).get(step))
        moments = MomentsStep(beta1=beta1, beta2=beta2, **weight_decay_operands(group, lr))
        grads = decayed_gradients_(ops, params, grads, moments)
        exp_avgs, exp_avg_sqs = state["exp_avg"], state["exp_avg_sq"]
        update_moments_(ops, grads, exp_avgs, exp_avg_sqs, beta1, beta2)
        denom = ops.sqrt(exp_avg_sqs)
        ops.div_(denom, bias_corrections(step, beta1, beta2).second_sqrt)
        ops.add_scalar_(denom, group["eps"])
        ops.addcdiv_(params, grads, denom, -coefficients.gradient)
        ops.addcdiv_(params, exp_avgs, denom, -coefficients.momentum)


NADAM_RULE = NAdamRule()
