"""RAdam: Adam whose adaptive learning rate is switched on only once its variance is tractable,
and then rectified to a constant variance.

Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond" (arXiv 1908.03265),
Algorithm 2. With ρ_∞ = 2 / (1 - β2) - 1:

    g_t = ∇f(θ_{t-1})                                 (negated under maximize)
    weight decay: coupled g_t <- g_t + λ θ_{t-1}, or decoupled θ_{t-1} <- θ_{t-1} (1 - γ λ)
    m_t, v_t as in :mod:`rectified.rules.moments`,    m̂_t = m_t / (1 - β1^t)
    ρ_t = ρ_∞ - 2 t β2^t / (1 - β2^t)                 (length of the approximated SMA)
    if ρ_t > threshold:                               (variance is tractable)
        l_t = √(1 - β2^t) / (√v_t + ε)                 (adaptive learning rate)
        r_t = √((ρ_t - 4)(ρ_t - 2) ρ_∞ / ((ρ_∞ - 4)(ρ_∞ - 2) ρ_t))
        θ_t = θ_{t-1} - γ r_t m̂_t l_t
    else if degenerated_to_sgd:
        θ_t = θ_{t-1} - γ m̂_t                          (un-adapted momentum)
    else:
        θ_t = θ_{t-1}                                 (no step; moments still accumulate)

The paper's Algorithm 2 uses threshold 4; torch.optim and the authors' code use 5 (default
here). ε is added to √v_t before the bias correction √(1 - β2^t), as torch.optim and the
authors' code do. With ``degenerated_to_sgd=False`` a skipped step also skips decoupled decay,
as in the authors' code.

The scalar functions below (ρ_∞, ρ_t, r_t) are the single definition used by the optimizer,
the schedules and the variance lab.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

from torch import Tensor

from rectified.rules.adam import betas_of, weight_decay_operands
from rectified.rules.base import TensorList, TensorListOps, UpdateRule, scalar, zeros_like
from rectified.rules.moments import ADAPTIVE, MOMENTUM, NO_STEP, AdamStep, bias_corrections

DEFAULT_THRESHOLD = 5.0
PAPER_THRESHOLD = 4.0


def rho_inf(beta2: float) -> float:
    """ρ_∞ = 2 / (1 - β2) - 1: the maximum length of the approximated simple moving average."""
    return 2.0 / (1.0 - beta2) - 1.0


def rho_t(step: float, beta2: float) -> float:
    """ρ_t = ρ_∞ - 2 t β2^t / (1 - β2^t): the length of the approximated SMA at step t >= 1.

    ρ_1 = 1 for every β2, and ρ_t rises to ρ_∞ as t grows.
    """
    if step <= 0:
        raise ValueError(f"rho_t is defined for step >= 1, got {step}")
    power = beta2**step
    return rho_inf(beta2) - 2.0 * step * power / (1.0 - power)


def rectification_from_rho(rho: float, rho_infinity: float) -> float:
    """r = √((ρ - 4)(ρ - 2) ρ_∞ / ((ρ_∞ - 4)(ρ_∞ - 2) ρ)) for ρ > 4 (and ρ_∞ > 4)."""
    numerator = (rho - 4.0) * (rho - 2.0) * rho_infinity
    return math.sqrt(numerator / ((rho_infinity - 4.0) * (rho_infinity - 2.0) * rho))


def check_threshold(threshold: Any) -> None:
    """``threshold`` must be a real number >= 4, since r_t is only defined for ρ_t > 4."""
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise TypeError(f"Invalid threshold value: {threshold!r} (expected a number >= 4)")
    if not threshold >= PAPER_THRESHOLD:  # NaN fails this too
        raise ValueError(f"Invalid threshold value: {threshold} (r_t needs rho_t > 4)")


def rectification_term(step: float, beta2: float, threshold: float = DEFAULT_THRESHOLD) -> float:
    """r_t at step t, or 0.0 where ρ_t <= threshold (the adaptive learning rate is off there).

    ``threshold`` must be >= 4, since r_t is only defined for ρ_t > 4 (the optimizer checks its
    type once, when it changes; this guard is the formula's domain).
    """
    if not threshold >= PAPER_THRESHOLD:  # NaN fails this too
        raise ValueError(f"Invalid threshold value: {threshold} (r_t needs rho_t > 4)")
    rho = rho_t(step, beta2)
    if rho <= threshold:
        return 0.0
    return rectification_from_rho(rho, rho_inf(beta2))


class RAdamCoefficients(NamedTuple):
    adaptive: bool  # rectified adaptive step (True) or un-adapted momentum step (False)
    step_size: float  # 0.0 means the parameter is not moved


def radam_coefficients(
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    threshold: float = DEFAULT_THRESHOLD,
    degenerated_to_sgd: bool = True,
) -> RAdamCoefficients:
    """The per-step scalars of RAdam.

    Adaptive: θ <- θ - step_size · m / (√v + ε) with step_size = γ r_t √(1 - β2^t) / (1 - β1^t).
    Otherwise: θ <- θ - step_size · m with step_size = γ / (1 - β1^t), or 0 if not degenerated.
    ``threshold`` is taken as valid (the optimizer checks it when it changes).
    """
    bc = bias_corrections(step, beta1, beta2)
    r = rectification_term(step, beta2, threshold)
    if r > 0.0:
        return RAdamCoefficients(True, lr * r * bc.second_sqrt / bc.first)
    return RAdamCoefficients(False, lr / bc.first if degenerated_to_sgd else 0.0)


class RAdamRule(UpdateRule):
    name = "RAdam"
    fused_by_default = True
    sparse_hint = ", please consider SparseAdam instead"

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
        coeffs = radam_coefficients(
            step, lr, beta1, beta2, group["threshold"], group["degenerated_to_sgd"]
        )
        operands = weight_decay_operands(group, lr)
        if coeffs.adaptive:
            mode = ADAPTIVE
        elif group["degenerated_to_sgd"]:
            mode = MOMENTUM
        else:  # no step: decoupled decay is skipped too, as in the authors' code
            mode = NO_STEP
            operands.pop("decay", None)
        ops.adam_step_(
            params, grads, state["exp_avg"], state["exp_avg_sq"], None,
            AdamStep(beta1=beta1, beta2=beta2, step_size=coeffs.step_size, eps=group["eps"],
                     mode=mode, **operands),
        )


RADAM_RULE = RAdamRule()
