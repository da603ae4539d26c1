"""The variance lab: the paper's analysis of the adaptive learning rate ψ, computed, simulated
and watched live.

Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond" (arXiv 1908.03265),
Sections 3-4. Closed forms (:mod:`~rectified.variance.closed_forms`), Monte Carlo
(:mod:`~rectified.variance.simulation`), a monitor for a training run
(:mod:`~rectified.variance.monitor`), plots (:mod:`~rectified.variance.plots`, needs
matplotlib) and the ``rectified variance`` command (:mod:`~rectified.variance.command`).
"""

from rectified.variance.closed_forms import (
    adaptive_lr_mean,
    adaptive_lr_variance,
    adaptive_lr_variance_first_order,
    ema_centre_of_mass,
    rectification_from_rho,
    rectification_term,
    rectified_variance_ratio,
    rho_inf,
    rho_t,
    sma_length,
)
from rectified.variance.monitor import (
    QUANTILE_LEVELS,
    VarianceMonitor,
    log_histogram,
    log_histogram_,
)
from rectified.variance.record import AdaptiveLrStats, MonitorRecord
from rectified.variance.simulation import (
    PsiStatistics,
    ema_psi,
    simulate_ema_psi,
    simulate_psi,
    simulate_sma_psi,
    sma_psi,
)

__all__ = [
    "QUANTILE_LEVELS",
    "AdaptiveLrStats",
    "MonitorRecord",
    "PsiStatistics",
    "VarianceMonitor",
    "adaptive_lr_mean",
    "adaptive_lr_variance",
    "adaptive_lr_variance_first_order",
    "ema_centre_of_mass",
    "ema_psi",
    "log_histogram",
    "log_histogram_",
    "rectification_from_rho",
    "rectification_term",
    "rectified_variance_ratio",
    "rho_inf",
    "rho_t",
    "simulate_ema_psi",
    "simulate_psi",
    "simulate_sma_psi",
    "sma_length",
    "sma_psi",
]
