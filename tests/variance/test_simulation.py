"""Monte Carlo of ψ against the closed forms and against the formulas written out directly."""

import numpy as np
import pytest

from rectified.variance import (
    adaptive_lr_mean,
    adaptive_lr_variance,
    ema_psi,
    rho_t,
    simulate_ema_psi,
    simulate_psi,
    simulate_sma_psi,
    sma_psi,
)


def test_sma_psi_is_the_formula():
    g = np.random.default_rng(0).standard_normal((5, 9))
    psi = sma_psi(g)
    for t in range(1, 10):
        np.testing.assert_allclose(psi[:, t - 1], np.sqrt(t / np.sum(g[:, :t] ** 2, axis=1)))


def test_ema_psi_is_the_formula():
    """ψ_t = √((1 - β2^t) / ((1 - β2) Σ_i β2^{t-i} g_i²)), the paper's closed form of Adam's EMA."""
    g = np.random.default_rng(1).standard_normal((4, 12))
    beta2 = 0.9
    psi = ema_psi(g, beta2)
    for t in range(1, 13):
        weights = (1 - beta2) * beta2 ** (t - np.arange(1, t + 1))
        expected = np.sqrt((1 - beta2**t) / (g[:, :t] ** 2 @ weights))
        np.testing.assert_allclose(psi[:, t - 1], expected, rtol=1e-12)


def test_sma_simulation_matches_theorem_1():
    sigma = 0.5  # τ = 1/σ
    sim = simulate_sma_psi(60, n_samples=60_000, sigma=sigma, seed=3)
    for t in [5, 8, 20, 60]:
        expected = adaptive_lr_variance(t, 1 / sigma)
        # 5 standard errors; from t = 5 on E[ψ⁴] is finite but the error estimate needs t > 8
        # to be reliable, so t = 5 and 8 get a flat 6% instead.
        tolerance = 5 * sim.variance_standard_error[t - 1] if t > 8 else 0.06 * expected
        assert abs(sim.variance[t - 1] - expected) < tolerance
        assert sim.mean[t - 1] == pytest.approx(adaptive_lr_mean(t, 1 / sigma), rel=0.01)


def test_small_t_variance_diverges():
    """Var[ψ_t] is infinite for t <= 2: the sample variance dwarfs the finite ones and grows."""
    small = simulate_sma_psi(10, n_samples=20_000, seed=4)
    large = simulate_sma_psi(10, n_samples=200_000, seed=4)
    assert small.variance[0] > 100 * small.variance[9]
    assert small.variance[1] > 10 * small.variance[9]
    # ψ_1 = 1/|g|: the sample variance grows with the sample size (like n), a finite one would not
    assert large.variance[0] > 3 * small.variance[0]


def test_ema_simulation_follows_rho_t():
    """Adam's EMA ψ_t is approximately scaled-inverse-χ² with ρ_t degrees of freedom.

    The approximation holds while the EMA weights are close to equal, t <~ 1 / (2 (1 - β2)).
    """
    beta2 = 0.99
    sim = simulate_ema_psi(50, beta2, n_samples=40_000, seed=5)
    for t in [10, 30, 50]:
        expected = adaptive_lr_variance(rho_t(t, beta2))
        # the approximation, not the sampling, dominates: 10% covers both at these t
        assert sim.variance[t - 1] == pytest.approx(expected, rel=0.10)


def test_simulate_psi_at_real_degrees_of_freedom():
    rhos = [4.3, 7.5, 250.0]
    sim = simulate_psi(rhos, n_samples=200_000, tau=3.0, seed=6)
    for k, rho in enumerate(rhos):
        assert sim.mean[k] == pytest.approx(adaptive_lr_mean(rho, 3.0), rel=5e-3)
    assert (
        abs(sim.variance[2] - adaptive_lr_variance(250.0, 3.0)) < 5 * sim.variance_standard_error[2]
    )


def test_simulations_are_deterministic_given_the_seed():
    a = simulate_ema_psi(20, 0.999, n_samples=1000, seed=7)
    b = simulate_ema_psi(20, 0.999, n_samples=1000, seed=7)
    c = simulate_ema_psi(20, 0.999, n_samples=1000, seed=8)
    np.testing.assert_array_equal(a.variance, b.variance)
    assert not np.array_equal(a.variance, c.variance)


def test_chunked_moments_equal_numpy_moments(monkeypatch):
    """Moments accumulated over chunks equal numpy's on the same draws."""
    import rectified.variance.simulation as simulation

    monkeypatch.setattr(simulation, "_CHUNK_VALUES", 70)  # many uneven chunks of 7 rows
    sim = simulate_sma_psi(10, n_samples=1000, seed=9)
    rng = np.random.default_rng(9)
    psi = np.concatenate(
        [sma_psi(rng.standard_normal((min(7, 1000 - s), 10))) for s in range(0, 1000, 7)]
    )
    np.testing.assert_allclose(sim.mean, psi.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sim.variance, psi.var(axis=0, ddof=1), rtol=1e-9)
    central4 = ((psi - psi.mean(axis=0)) ** 4).mean(axis=0)
    np.testing.assert_allclose(sim.fourth_central_moment, central4, rtol=1e-6)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: simulate_sma_psi(0), "Invalid steps value: 0"),
        (lambda: simulate_sma_psi(5, n_samples=0), "Invalid n_samples value: 0"),
        (lambda: simulate_sma_psi(5, sigma=-1.0), "Invalid sigma value: -1.0"),
        (lambda: simulate_ema_psi(5, 1.0), "Invalid beta2 value: 1.0"),
        (lambda: simulate_psi([3.0, -1.0]), "Invalid rho value: -1.0"),
    ],
)
def test_bad_input_is_rejected(call, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        call()
