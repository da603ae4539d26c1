"""Closed forms of the paper's analysis of the adaptive learning rate ψ.

Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond" (arXiv 1908.03265),
Sections 3-4. For i.i.d. gradients g_i ~ N(0, σ²), the simple-moving-average form of Adam's
adaptive learning rate

    ψ = √(t / Σ_{i=1}^t g_i²)

has ψ² ~ Scale-inv-χ²(ρ, τ²) with ρ = t degrees of freedom and scale τ² = 1/σ², i.e.
ψ² = ρ τ² / X with X ~ χ²_ρ. Its variance (Theorem 1) is finite for ρ > 4 as the paper states it:

    Var[ψ] = τ² (ρ / (ρ - 2) - ρ 2^{2ρ-5} / π · B((ρ-1)/2, (ρ-1)/2)²)

and to first order (Var[√Y] ≈ Var[Y] / (4 E[Y]) with Y = ψ²)

    Var[ψ] ≈ τ² ρ / (2 (ρ - 2)(ρ - 4)).

Adam's exponential moving average is approximated by a simple moving average of length
f(t, β2) = ρ_t (same centre of mass), and the rectification term r_t makes
r_t² Var[ψ(ρ_t)] = Var[ψ(ρ_∞)] with the first-order form. ρ_∞, ρ_t and r_t are defined once, in
:mod:`rectified.rules.radam`, and re-exported here.
"""

from __future__ import annotations

import math

import numpy as np

from rectified.rules.radam import (
    PAPER_THRESHOLD,
    rectification_from_rho,
    rectification_term,
    rho_inf,
    rho_t,
)

__all__ = [
    "adaptive_lr_mean",
    "adaptive_lr_variance",
    "adaptive_lr_variance_first_order",
    "ema_centre_of_mass",
    "rectification_from_rho",
    "rectification_term",
    "rectified_variance_ratio",
    "rho_inf",
    "rho_t",
    "sma_length",
]


def _check_rho(rho: float) -> float:
    rho = float(rho)
    if not rho > PAPER_THRESHOLD or math.isinf(rho):
        raise ValueError(f"Invalid rho value: {rho} (Var[psi] needs rho > 4)")
    return rho


def _check_tau(tau: float) -> float:
    tau = float(tau)
    if not 0.0 < tau < math.inf:
        raise ValueError(f"Invalid tau value: {tau} (expected 0 < tau < inf)")
    return tau


def _check_beta2(beta2: float) -> float:
    beta2 = float(beta2)
    if not 0.0 < beta2 < 1.0:
        raise ValueError(f"Invalid beta2 value: {beta2} (expected 0 < beta2 < 1)")
    return beta2


# Stirling's series: lgamma(z) - ((z - 1/2) log z - z + log(2π)/2) = Σ B_2k / (2k(2k-1) z^(2k-1)).
_STIRLING = (1 / 12, -1 / 360, 1 / 1260, -1 / 1680, 1 / 1188)
_ASYMPTOTIC_RHO = 50.0  # from here the truncated series is exact to double precision


def _stirling_tail(z: float) -> float:
    return sum(c / z ** (2 * k + 1) for k, c in enumerate(_STIRLING))


def _log_mean_squared_ratio(rho: float) -> float:
    """L = log(E[ψ]² / E[ψ²]) = log((ρ 2^{2ρ-5} / π) B((ρ-1)/2, (ρ-1)/2)² (ρ - 2) / ρ) < 0.

    Var[ψ] = -τ² ρ/(ρ-2) expm1(L), and L ≈ -1/(2ρ) is the small difference of large terms:
    written in logs nothing overflows (2^{2ρ-5} alone does at ρ ≈ 514). Below ρ = 50 it uses
    log B(a, a) = 2 lgamma(a) - lgamma(2a), a = (ρ-1)/2. From ρ = 50, with x = ρ/2 and the
    duplication formula E[ψ]²/τ² = x (Γ(x - 1/2) / Γ(x))², Stirling's series gives

        L = 2 (x - 1) log1p(-1/(2x)) + 1 + 2 (S(x - 1/2) - S(x)) + log1p(-2/ρ)

    whose terms are O(1), so the relative error of Var stays near 1e-16 ρ instead of growing
    with lgamma(ρ) ≈ ρ log ρ.
    """
    if rho >= _ASYMPTOTIC_RHO:
        x = rho / 2.0
        return (
            2.0 * (x - 1.0) * math.log1p(-0.5 / x)
            + 1.0
            + 2.0 * (_stirling_tail(x - 0.5) - _stirling_tail(x))
            + math.log1p(-2.0 / rho)
        )
    a = (rho - 1.0) / 2.0
    log_beta = 2.0 * math.lgamma(a) - math.lgamma(2.0 * a)
    log_mean_sq = math.log(rho) + (2.0 * rho - 5.0) * math.log(2.0) - math.log(math.pi)
    return log_mean_sq + 2.0 * log_beta + math.log1p(-2.0 / rho)


def adaptive_lr_mean(rho: float, tau: float = 1.0) -> float:
    """E[ψ] = τ √(ρ 2^{2ρ-5} / π) · B((ρ-1)/2, (ρ-1)/2) for ψ² ~ Scale-inv-χ²(ρ, τ²), ρ > 4.

    (Equal to τ √(ρ/2) Γ((ρ-1)/2) / Γ(ρ/2); the mean exists for ρ > 1, the domain here is the
    paper's, ρ > 4.)
    """
    rho, tau = _check_rho(rho), _check_tau(tau)
    return tau * math.sqrt(rho / (rho - 2.0) * math.exp(_log_mean_squared_ratio(rho)))


def adaptive_lr_variance(rho: float, tau: float = 1.0) -> float:
    """Var[ψ] = τ² (ρ/(ρ-2) - ρ 2^{2ρ-5}/π · B((ρ-1)/2, (ρ-1)/2)²), for ρ > 4 (Theorem 1).

    Liu et al. (arXiv 1908.03265), Theorem 1, for ψ² ~ Scale-inv-χ²(ρ, τ²). Computed as
    -τ² ρ/(ρ-2) · expm1(log(E[ψ]²/E[ψ²])) with log-gamma, so it neither overflows nor loses the
    small difference of two numbers close to 1 for large ρ (Var[ψ] ≈ τ²/(2ρ) there).

    Raises:
        ValueError: ``Invalid rho value`` for ρ <= 4 (the paper's domain), or a bad τ.
    """
    rho, tau = _check_rho(rho), _check_tau(tau)
    return -(tau**2) * rho / (rho - 2.0) * math.expm1(_log_mean_squared_ratio(rho))


def adaptive_lr_variance_first_order(rho: float, tau: float = 1.0) -> float:
    """Var[ψ] ≈ τ² ρ / (2 (ρ - 2)(ρ - 4)), the first-order form the paper derives r_t from.

    Delta method: with Y = ψ², E[Y] = ρτ²/(ρ-2) and Var[Y] = 2ρ²τ⁴/((ρ-2)²(ρ-4)), so
    Var[√Y] ≈ Var[Y] / (4 E[Y]) (Liu et al., arXiv 1908.03265, Section 4.2). Needs ρ > 4.
    """
    rho, tau = _check_rho(rho), _check_tau(tau)
    return tau**2 * rho / (2.0 * (rho - 2.0) * (rho - 4.0))


def ema_centre_of_mass(step: int, beta2: float) -> float:
    """(1 - β2) Σ_{i=1}^t β2^{t-i} i / (1 - β2^t): the centre of mass of Adam's EMA weights.

    Evaluated as the weighted sum itself (O(t)), so that it checks the closed form of ρ_t.
    """
    beta2 = _check_beta2(beta2)
    if isinstance(step, bool) or int(step) != step or step < 1:
        raise ValueError(f"Invalid step value: {step} (expected an integer >= 1)")
    i = np.arange(1, int(step) + 1, dtype=np.float64)
    weights = (1.0 - beta2) * beta2 ** (step - i) / -math.expm1(step * math.log(beta2))
    return float(np.dot(weights, i))


def sma_length(step: int, beta2: float) -> float:
    """f(t, β2): the length of the simple moving average with the centre of mass of the EMA.

    The paper's equation for f (Section 4.2) matches centres of mass:

        (1 - β2) Σ_{i=1}^t β2^{t-i} i / (1 - β2^t) = Σ_{i=1}^{f} (t + 1 - i) / f = t - (f - 1)/2

    so f = 2 (t - centre of mass) + 1, which equals ρ_t = ρ_∞ - 2 t β2^t / (1 - β2^t).
    """
    return 2.0 * (step - ema_centre_of_mass(step, beta2)) + 1.0


def rectified_variance_ratio(step: int, beta2: float, *, first_order: bool = False) -> float:
    """r_t² Var[ψ(ρ_t)] / Var[ψ(ρ_∞)]: 1 exactly with the first-order Var, ≈ 1 with the exact.

    The rectification makes the variance of r_t ψ constant in t (Liu et al., arXiv 1908.03265,
    eq. for r_t). Needs ρ_t > 4. With the exact Var[ψ], the ratio differs from 1 by about
    (9/4)(1/ρ_t - 1/ρ_∞): the exact and first-order forms are τ²/(2ρ)(1 + 15/(4ρ) + ...) and
    τ²/(2ρ)(1 + 6/ρ + ...).
    """
    rho = rho_t(step, beta2)
    rho_infinity = rho_inf(beta2)
    variance = adaptive_lr_variance_first_order if first_order else adaptive_lr_variance
    r = rectification_from_rho(_check_rho(rho), _check_rho(rho_infinity))
    return r**2 * variance(rho) / variance(rho_infinity)
