"""Monte Carlo of the adaptive learning rate ψ for i.i.d. N(0, σ²) gradients.

Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond" (arXiv 1908.03265),
Section 3: with g_1, ..., g_t i.i.d. N(0, σ²),

    simple moving average:  ψ_t = √(t / Σ_{i=1}^t g_i²)        (ψ_t² ~ Scale-inv-χ²(t, 1/σ²))
    Adam's EMA:             ψ_t = √((1 - β2^t) / v_t),  v_t = β2 v_{t-1} + (1 - β2) g_t²

The first has exactly ρ = t degrees of freedom; the second is approximated by ρ = ρ_t. For t = 1
and 2 the variance of ψ is infinite (E[1/χ²_ν] diverges for ν <= 2), which shows as sample
variances that are orders of magnitude larger and grow with the number of samples.

Everything is vectorised over samples with numpy and deterministic given the seed; samples are
drawn in chunks so memory stays bounded whatever the number of samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PsiStatistics",
    "ema_psi",
    "simulate_ema_psi",
    "simulate_psi",
    "simulate_sma_psi",
    "sma_psi",
]

# Samples x steps per chunk: 4M float64 values (32 MB) at most at once.
_CHUNK_VALUES = 4_000_000


@dataclass(frozen=True)
class PsiStatistics:
    """Sample statistics of ψ at each x (a step t or a degree of freedom ρ)."""

    x: np.ndarray
    mean: np.ndarray
    variance: np.ndarray  # unbiased sample variance
    fourth_central_moment: np.ndarray  # for the standard error of the variance
    n_samples: int

    @property
    def variance_standard_error(self) -> np.ndarray:
        """√((μ4 - σ⁴) / n): the standard error of the sample variance (large-n form)."""
        excess = np.maximum(self.fourth_central_moment - self.variance**2, 0.0)
        return np.sqrt(excess / self.n_samples)


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"Invalid {name} value: {value} (expected an integer >= 1)")
    return int(value)


def _check_positive(name: str, value: float) -> float:
    if not 0.0 < float(value) < np.inf:
        raise ValueError(f"Invalid {name} value: {value} (expected 0 < {name} < inf)")
    return float(value)


def _check_beta2(beta2: float) -> float:
    if not 0.0 < float(beta2) < 1.0:
        raise ValueError(f"Invalid beta2 value: {beta2} (expected 0 < beta2 < 1)")
    return float(beta2)


def sma_psi(grads: np.ndarray) -> np.ndarray:
    """ψ_t = √(t / Σ_{i<=t} g_i²) for every prefix t of each row of ``grads`` [samples, steps]."""
    grads = np.asarray(grads, dtype=np.float64)
    t = np.arange(1, grads.shape[-1] + 1, dtype=np.float64)
    return np.sqrt(t / np.cumsum(grads**2, axis=-1))


def ema_psi(grads: np.ndarray, beta2: float) -> np.ndarray:
    """ψ_t = √((1 - β2^t) / v_t) with v_t = β2 v_{t-1} + (1 - β2) g_t², v_0 = 0, per row.

    Adam's adaptive learning rate without ε, for each prefix of each row of ``grads``
    [samples, steps].
    """
    beta2 = _check_beta2(beta2)
    grads = np.asarray(grads, dtype=np.float64)
    psi = np.empty_like(grads)
    v = np.zeros(grads.shape[:-1])
    for step in range(grads.shape[-1]):
        v *= beta2
        v += (1.0 - beta2) * grads[..., step] ** 2
        psi[..., step] = np.sqrt(-np.expm1((step + 1) * np.log(beta2)) / v)
    return psi


class _Moments:
    """Running mean, variance and fourth central moment over chunks of samples (along axis 0)."""

    def __init__(self) -> None:
        self.sums: list[np.ndarray] = []

    def add(self, values: np.ndarray) -> None:
        # Shifted by the chunk's first row so that large means do not swamp the central moments.
        if not self.sums:
            self.shift = values[0].copy()
            self.sums = [np.zeros_like(self.shift) for _ in range(5)]
        centred = values - self.shift
        power = np.ones_like(centred)
        for k in range(5):
            self.sums[k] += power.sum(axis=0)
            power = power * centred

    def statistics(self, x: np.ndarray) -> PsiStatistics:
        n = self.sums[0]
        m1, m2, m3, m4 = (s / n for s in self.sums[1:])
        mean = self.shift + m1
        central2 = m2 - m1**2
        central4 = m4 - 4 * m3 * m1 + 6 * m2 * m1**2 - 3 * m1**4
        variance = central2 * n / (n - 1)
        return PsiStatistics(np.asarray(x), mean, variance, central4, int(n.flat[0]))


def _chunks(n_samples: int, width: int) -> Iterator[int]:
    size = max(1, _CHUNK_VALUES // max(width, 1))
    for start in range(0, n_samples, size):
        yield min(size, n_samples - start)


def simulate_sma_psi(
    steps: int, n_samples: int = 100_000, sigma: float = 1.0, seed: int = 0
) -> PsiStatistics:
    """Statistics of ψ_t = √(t / Σ g_i²), g_i ~ N(0, σ²), for t = 1..steps.

    Theory: ψ_t² ~ Scale-inv-χ²(t, 1/σ²), so Var[ψ_t] = Var[ψ](ρ = t, τ = 1/σ) for t > 4.
    """
    steps, n_samples = _check_count("steps", steps), _check_count("n_samples", n_samples)
    sigma = _check_positive("sigma", sigma)
    rng = np.random.default_rng(seed)
    moments = _Moments()
    for size in _chunks(n_samples, steps):
        moments.add(sma_psi(sigma * rng.standard_normal((size, steps))))
    return moments.statistics(np.arange(1, steps + 1))


def simulate_ema_psi(
    steps: int,
    beta2: float,
    n_samples: int = 100_000,
    sigma: float = 1.0,
    seed: int = 0,
) -> PsiStatistics:
    """Statistics of Adam's ψ_t = √((1 - β2^t) / v_t), g_i ~ N(0, σ²), for t = 1..steps.

    Theory (approximate): Var[ψ_t] ≈ Var[ψ](ρ = ρ_t, τ = 1/σ) where ρ_t > 4.
    """
    steps, n_samples = _check_count("steps", steps), _check_count("n_samples", n_samples)
    sigma = _check_positive("sigma", sigma)
    rng = np.random.default_rng(seed)
    moments = _Moments()
    for size in _chunks(n_samples, steps):
        moments.add(ema_psi(sigma * rng.standard_normal((size, steps)), beta2))
    return moments.statistics(np.arange(1, steps + 1))


def simulate_psi(
    rhos: Sequence[float] | np.ndarray,
    n_samples: int = 100_000,
    tau: float = 1.0,
    seed: int = 0,
) -> PsiStatistics:
    """Statistics of ψ = τ √(ρ / X), X ~ χ²_ρ (ψ² ~ Scale-inv-χ²(ρ, τ²)), for each ρ > 0.

    Real (non-integer) degrees of freedom are allowed, so the theory curve Var[ψ](ρ) can be
    checked anywhere, e.g. just above ρ = 4.
    """
    rhos = np.asarray(rhos, dtype=np.float64)
    if rhos.ndim != 1 or rhos.size == 0:
        raise ValueError(f"Invalid rhos value: {rhos} (expected a non-empty 1-d sequence)")
    if not np.all(rhos > 0):
        raise ValueError(f"Invalid rho value: {rhos[~(rhos > 0)][0]} (expected rho > 0)")
    n_samples = _check_count("n_samples", n_samples)
    tau = _check_positive("tau", tau)
    rng = np.random.default_rng(seed)
    moments = _Moments()
    for size in _chunks(n_samples, rhos.size):
        moments.add(tau * np.sqrt(rhos / rng.chisquare(rhos, size=(size, rhos.size))))
    return moments.statistics(rhos)
