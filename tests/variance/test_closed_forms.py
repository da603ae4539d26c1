"""Closed forms of the variance lab against independent evaluations.

References: scipy quadrature of the density of ψ (ψ² ~ Scale-inv-χ²(ρ, τ²)), scipy's
inverse-gamma moments, high-sample Monte Carlo, and asymptotic series derived by hand.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import integrate, stats

import rectified
import rectified.rules.radam as radam_rule
from rectified import variance
from rectified.variance import (
    adaptive_lr_mean,
    adaptive_lr_variance,
    adaptive_lr_variance_first_order,
    rectification_term,
    rectified_variance_ratio,
    rho_inf,
    rho_t,
    simulate_psi,
    sma_length,
)

RHOS = [4.001, 4.1, 5.0, 10.0, 100.0, 1999.0]


def psi_density(y: np.ndarray, rho: float, tau: float) -> np.ndarray:
    """Density of ψ = √Y for Y = ψ² ~ InvGamma(ρ/2, scale ρτ²/2): p_ψ(y) = 2y p_Y(y²)."""
    return 2.0 * y * stats.invgamma.pdf(y * y, a=rho / 2.0, scale=rho * tau**2 / 2.0)


def quadrature_moments(rho: float, tau: float) -> tuple[float, float]:
    """(E[ψ], Var[ψ]) by adaptive quadrature, integrating (ψ - E ψ)² for the variance."""
    centre = tau  # ψ concentrates around τ; splitting there helps quad
    upper = tau * 50.0

    def moment(f):
        parts = [
            integrate.quad(f, 0.0, centre, limit=400, epsabs=0, epsrel=1e-12)[0],
            integrate.quad(f, centre, upper, limit=400, epsabs=0, epsrel=1e-12)[0],
            integrate.quad(f, upper, np.inf, limit=400, epsabs=0, epsrel=1e-12)[0],
        ]
        return math.fsum(parts)

    mean = moment(lambda y: y * psi_density(y, rho, tau))
    var = moment(lambda y: (y - mean) ** 2 * psi_density(y, rho, tau))
    return mean, var


@pytest.mark.parametrize("rho", RHOS)
@pytest.mark.parametrize("tau", [1.0, 0.3])
def test_variance_matches_quadrature(rho, tau):
    mean, var = quadrature_moments(rho, tau)
    # Quadrature of a density with a ρ+1 power tail: 1e-7 relative is what quad reaches near 4.
    assert adaptive_lr_mean(rho, tau) == pytest.approx(mean, rel=1e-9)
    assert adaptive_lr_variance(rho, tau) == pytest.approx(var, rel=1e-7)


@pytest.mark.parametrize("rho", [4.5, 10.0, 1999.0])
def test_variance_matches_monte_carlo(rho):
    sim = simulate_psi([rho], n_samples=400_000, tau=2.0, seed=1)
    # 5 standard errors of the sample variance (from the sample's own fourth moment); at
    # ρ = 4.5 that error estimate is itself noisy (E[ψ⁸] is infinite), so a 5% cap as well.
    tolerance = max(5 * sim.variance_standard_error[0], 0.0) if rho > 5 else 0.05 * sim.variance[0]
    assert abs(sim.variance[0] - adaptive_lr_variance(rho, 2.0)) < tolerance


def test_variance_against_gamma_ratio_form():
    """Var = τ²(ρ/(ρ-2) - (ρ/2) (Γ((ρ-1)/2)/Γ(ρ/2))²), the duplication-formula form."""
    from scipy.special import gammaln

    for rho in [4.01, 6.0, 33.3, 49.99, 50.0, 50.01, 400.0]:
        ratio = np.exp(2 * (gammaln((rho - 1) / 2) - gammaln(rho / 2)))
        expected = rho / (rho - 2) - rho / 2 * ratio
        assert adaptive_lr_variance(rho) == pytest.approx(expected, rel=1e-9)


def test_large_rho_is_finite_and_follows_the_asymptotic_series():
    """Var[ψ] = τ²/(2ρ) (1 + 15/(4ρ) + O(1/ρ²)), from Γ(x - 1/2)/Γ(x) = x^{-1/2}(1 + 3/(8x) + ...).

    So ρ (2ρ Var - 1) -> 15/4 with an O(1/ρ) correction (the 5/ρ relative band).
    """
    for rho in [2000.0, 1e4, 1e5]:
        var = adaptive_lr_variance(rho)
        assert (2 * rho * var - 1) * rho == pytest.approx(15 / 4, rel=5 / rho)
    for rho in [1e7, 1e10]:  # no overflow or cancellation to zero far out
        assert adaptive_lr_variance(rho) == pytest.approx(1 / (2 * rho), rel=1e-5)


def test_variance_decreases_in_rho():
    rhos = np.geomspace(4.0 + 1e-6, 1e6, 3000)
    values = np.array([adaptive_lr_variance(r) for r in rhos])
    assert np.all(np.diff(values) < 0)


def test_first_order_is_the_delta_method():
    """Var[√Y] ≈ Var[Y] / (4 E[Y]) with Y ~ InvGamma(ρ/2, ρτ²/2) moments from scipy."""
    for rho in [4.5, 12.0, 300.0]:
        tau = 0.7
        y = stats.invgamma(a=rho / 2.0, scale=rho * tau**2 / 2.0)
        expected = y.var() / (4 * y.mean())
        assert adaptive_lr_variance_first_order(rho, tau) == pytest.approx(expected, rel=1e-12)


def test_first_order_approaches_the_exact_variance():
    """first / exact = 1 + 9/(4ρ) + O(1/ρ²) (6/ρ vs 15/(4ρ) in the two expansions)."""
    for rho in [1e3, 1e4, 1e5]:
        ratio = adaptive_lr_variance_first_order(rho) / adaptive_lr_variance(rho)
        assert (ratio - 1) * rho == pytest.approx(9 / 4, rel=20 / rho)


@pytest.mark.parametrize("bad", [4.0, 3.0, 0.0, -1.0, math.nan, math.inf])
def test_rho_outside_the_domain_is_rejected(bad):
    with pytest.raises(ValueError, match=r"Invalid rho value: .* \(Var\[psi\] needs rho > 4\)"):
        adaptive_lr_variance(bad)
    with pytest.raises(ValueError, match="Invalid rho value"):
        adaptive_lr_variance_first_order(bad)


def test_bad_tau_is_rejected():
    with pytest.raises(ValueError, match=r"Invalid tau value: -1\.0"):
        adaptive_lr_variance(10.0, -1.0)


# -- ρ_t, f(t, β2) and r_t ---------------------------------------------------------------------
@pytest.mark.parametrize("beta2", [0.9, 0.99, 0.999])
def test_sma_length_from_centres_of_mass_equals_rho_t(beta2):
    for t in [1, 2, 3, 10, 100, 1000, 5000]:
        assert sma_length(t, beta2) == pytest.approx(rho_t(t, beta2), rel=1e-10, abs=1e-10)


def test_rho_t_limits():
    for beta2 in [0.9, 0.999]:
        assert rho_t(1, beta2) == pytest.approx(1.0)
        assert rho_inf(beta2) == pytest.approx(2 / (1 - beta2) - 1)
        assert rho_t(200_000, beta2) == pytest.approx(rho_inf(beta2))


@pytest.mark.parametrize("beta2", [0.99, 0.999])
def test_rectification_makes_first_order_variance_constant(beta2):
    steps = [t for t in range(1, 20_000, 37) if rho_t(t, beta2) > 4]
    for t in steps:
        r = rectification_term(t, beta2, threshold=4.0)
        rho = rho_t(t, beta2)
        assert r**2 * adaptive_lr_variance_first_order(rho) == pytest.approx(
            adaptive_lr_variance_first_order(rho_inf(beta2)), rel=1e-10
        )
        assert rectified_variance_ratio(t, beta2, first_order=True) == pytest.approx(1, rel=1e-10)


@pytest.mark.parametrize("beta2", [0.99, 0.999])
def test_rectified_exact_variance_is_constant_to_first_order(beta2):
    """With the exact Var, r_t² Var[ψ(ρ_t)] / Var[ψ(ρ_∞)] - 1 ≈ -(9/4)(1/ρ_t - 1/ρ_∞)."""
    for t in range(1, 30_000, 53):
        rho = rho_t(t, beta2)
        if rho < 20:
            continue
        predicted = -9 / 4 * (1 / rho - 1 / rho_inf(beta2))
        deviation = rectified_variance_ratio(t, beta2) - 1
        assert abs(deviation - predicted) <= 30 / rho**2


def test_rectification_below_the_threshold_is_zero():
    beta2 = 0.999
    assert rho_t(5, beta2) < 5
    assert rectification_term(5, beta2) == 0.0  # default threshold 5
    assert rectification_term(5, beta2, threshold=4.0) > 0.0


# -- one definition --------------------------------------------------------------------------
def test_variance_re_exports_the_single_definition():
    for name in ("rho_inf", "rho_t", "rectification_term", "rectification_from_rho"):
        assert getattr(variance, name) is getattr(radam_rule, name)
    assert rectified.rectification_term is variance.rectification_term


def test_no_second_copy_of_the_scalar_formulas():
    source = Path(rectified.__file__).parent
    definitions = {
        name: [p for p in source.rglob("*.py") if f"def {name}(" in p.read_text()]
        for name in ("rho_inf", "rho_t", "rectification_term", "rectification_from_rho")
    }
    for name, files in definitions.items():
        assert [f.relative_to(source).as_posix() for f in files] == ["rules/radam.py"], name


def test_radam_steps_with_this_modules_rectification(monkeypatch):
    """rectified.RAdam calls the r_t that rectified.variance exports, and applies it."""
    calls = []

    def counting(step, beta2, threshold=radam_rule.DEFAULT_THRESHOLD):
        calls.append(step)
        return variance.rectification_term(step, beta2, threshold)

    monkeypatch.setattr(radam_rule, "rectification_term", counting)
    torch.manual_seed(0)
    param = torch.randn(7, dtype=torch.float64, requires_grad=True)
    beta1, beta2, lr, eps = 0.9, 0.99, 0.1, 1e-8
    optimizer = rectified.RAdam([param], lr=lr, betas=(beta1, beta2), eps=eps, foreach=False)
    m = torch.zeros(7, dtype=torch.float64)
    v = torch.zeros(7, dtype=torch.float64)
    for t in range(1, 12):
        grad = torch.randn(7, dtype=torch.float64)
        param.grad = grad.clone()
        before = param.detach().clone()
        optimizer.step()
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad**2
        m_hat = m / (1 - beta1**t)
        r = variance.rectification_term(t, beta2)
        if r > 0:
            expected = before - lr * r * m_hat * math.sqrt(1 - beta2**t) / (v.sqrt() + eps)
        else:
            expected = before - lr * m_hat
        torch.testing.assert_close(param.detach(), expected, rtol=1e-12, atol=1e-14)
    assert calls == list(range(1, 12))
