"""The variance lab's analysis: the paper's closed forms against simulation, the
rectification term against warmup, and a small model trained under a monitor.

Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond" (arXiv 1908.03265),
Sections 3-4. Each function returns arrays and a ``numbers`` dict;
:mod:`~rectified.variance.lab_files` writes them as tables, figures and JSON.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import rectified
from rectified.variance.closed_forms import (
    adaptive_lr_variance,
    adaptive_lr_variance_first_order,
    rectification_term,
    rectified_variance_ratio,
    rho_inf,
    rho_t,
)
from rectified.variance.monitor import VarianceMonitor
from rectified.variance.record import MonitorRecord
from rectified.variance.simulation import simulate_ema_psi, simulate_psi, simulate_sma_psi

BETA2S = (0.99, 0.995, 0.999)
EMA_BETA2 = 0.999
SEED = 0

# Sizes of the full and the quick lab: (full, quick).
SIZES = {
    "rho_points": (30, 12),
    "rho_samples": (200_000, 20_000),
    "steps": (200, 40),
    "step_samples": (100_000, 10_000),
    "rectification_steps": (10_000, 2_000),
    "train_steps": (300, 40),
    "monitor_every": (5, 2),
}


def _size(name: str, quick: bool) -> int:
    return SIZES[name][1 if quick else 0]

def _theory_or_nan(rho: float) -> float:
    return adaptive_lr_variance(rho) if rho > 4.0 else math.nan

# -- the analysis -----------------------------------------------------------------------------
def variance_vs_rho(quick: bool) -> dict[str, Any]:
    """Theorem 1, first order and Monte Carlo over ρ in (4, 2000]."""
    rhos = np.unique(
        np.concatenate([np.geomspace(4.05, 2000.0, _size("rho_points", quick)), [1999.0]])
    )
    mc = simulate_psi(rhos, n_samples=_size("rho_samples", quick), seed=SEED)
    theory = np.array([adaptive_lr_variance(r) for r in rhos])
    first_order = np.array([adaptive_lr_variance_first_order(r) for r in rhos])
    fine = np.geomspace(4.0001, 1e5, 2000)
    fine_variance = np.array([adaptive_lr_variance(r) for r in fine])
    # z-scores use the sample's own standard error, which is unreliable just above ρ = 4
    # (E[ψ⁴] is infinite below 4), so they are reported from ρ = 8 on.
    z = (mc.variance - theory) / mc.variance_standard_error
    return {
        "rhos": rhos,
        "theory": theory,
        "first_order": first_order,
        "mc": mc,
        "numbers": {
            "samples": mc.n_samples,
            "decreasing_in_rho": bool(np.all(np.diff(fine_variance) < 0)),
            "max_abs_z_monte_carlo_rho_ge_8": float(np.max(np.abs(z[rhos >= 8]))),
            "max_relative_error_monte_carlo": float(np.max(np.abs(mc.variance / theory - 1))),
            "variance_at_rho_1999": adaptive_lr_variance(1999.0),
            "first_order_over_theorem_at_rho_1999": float(
                adaptive_lr_variance_first_order(1999.0) / adaptive_lr_variance(1999.0)
            ),
        },
    }


def variance_vs_step(quick: bool) -> dict[str, Any]:
    """Monte Carlo of the SMA and EMA forms of ψ_t against the theory at ρ = t and ρ_t."""
    steps = _size("steps", quick)
    n = _size("step_samples", quick)
    sma = simulate_sma_psi(steps, n_samples=n, seed=SEED)
    ema = simulate_ema_psi(steps, EMA_BETA2, n_samples=n, seed=SEED + 1)
    t = np.arange(1, steps + 1)
    rhos = np.array([rho_t(int(k), EMA_BETA2) for k in t])
    sma_theory = np.array([_theory_or_nan(float(k)) for k in t])
    ema_theory = np.array([_theory_or_nan(r) for r in rhos])
    tractable = t >= 10
    return {
        "t": t,
        "rhos": rhos,
        "sma": sma,
        "ema": ema,
        "sma_theory": sma_theory,
        "ema_theory": ema_theory,
        "numbers": {
            "samples": n,
            "beta2": EMA_BETA2,
            "sma_variance_t1": float(sma.variance[0]),
            "sma_variance_t2": float(sma.variance[1]),
            "sma_variance_t10": float(sma.variance[9]),
            "sma_max_relative_error_t_ge_10": float(
                np.max(np.abs(sma.variance[tractable] / sma_theory[tractable] - 1))
            ),
            "ema_max_relative_error_t_ge_10": float(
                np.max(np.abs(ema.variance[tractable] / ema_theory[tractable] - 1))
            ),
        },
    }


def rectification_table(quick: bool) -> dict[str, Any]:
    """ρ_t, r_t (threshold 4), linear warmup and the rectified variance ratio, per β2."""
    last = _size("rectification_steps", quick)
    steps = np.unique(np.geomspace(1, last, 200).astype(np.int64))
    rows, worst = [], {}
    for beta2 in BETA2S:
        warmup = 2.0 / (1.0 - beta2)
        deviations = []
        for t in steps:
            rho = rho_t(int(t), beta2)
            ratio = rectified_variance_ratio(int(t), beta2) if rho > 4.0 else math.nan
            r = rectification_term(int(t), beta2, 4.0)
            rows.append([int(t), beta2, rho, r, min(t, warmup) / warmup, ratio])
            if rho >= 20.0:
                deviations.append(abs(ratio - 1.0))
        worst[str(beta2)] = float(max(deviations))
    return {
        "steps": steps,
        "rows": rows,
        "numbers": {
            "rho_inf": {str(b): rho_inf(b) for b in BETA2S},
            "max_abs_ratio_minus_1_rho_t_ge_20": worst,
        },
    }


# -- a live run -------------------------------------------------------------------------------
def _synthetic_task(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Four Gaussian blobs in 16 dimensions: a classification task built on the spot."""
    generator = torch.Generator().manual_seed(seed)
    centres = 2.0 * torch.randn(4, 16, generator=generator)
    labels = torch.randint(0, 4, (2048,), generator=generator)
    return centres[labels] + torch.randn(2048, 16, generator=generator), labels


def _optimizers(steps: int) -> dict[str, Any]:
    warmup = min(steps // 2, int(2.0 / (1.0 - 0.999)))

    def adam_warmup(params: Any) -> tuple[torch.optim.Optimizer, Any]:
        optimizer = rectified.Adam(params, lr=1e-2)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min(1.0, (s + 1) / warmup)
        )
        return optimizer, schedule

    return {
        "adam": lambda params: (rectified.Adam(params, lr=1e-2), None),
        "adam_warmup": adam_warmup,
        "radam": lambda params: (rectified.RAdam(params, lr=1e-2), None),
    }


def monitored_runs(out_dir: Path, quick: bool) -> dict[str, Any]:
    """Train one small MLP per optimizer under a monitor; save each monitor's record."""
    steps, every = _size("train_steps", quick), _size("monitor_every", quick)
    threads = torch.get_num_threads()
    # The model is tiny: extra threads only add synchronisation, badly so on a busy machine.
    torch.set_num_threads(1)
    try:
        return _monitored_runs(out_dir, steps, every)
    finally:
        torch.set_num_threads(threads)


def _monitored_runs(out_dir: Path, steps: int, every: int) -> dict[str, Any]:
    x, y = _synthetic_task(SEED)
    records: dict[str, MonitorRecord] = {}
    numbers: dict[str, Any] = {}
    for name, make in _optimizers(steps).items():
        torch.manual_seed(SEED)
        model = nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh())
        model.append(nn.Linear(64, 4))
        optimizer, schedule = make(model.parameters())
        monitor = VarianceMonitor(optimizer, every=every, names=model.named_parameters())
        batches = torch.Generator().manual_seed(SEED)
        losses = []
        for _ in range(steps):
            batch = torch.randint(0, len(x), (64,), generator=batches)
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
            losses.append(loss.item())
        monitor.detach()
        records[name] = monitor.record()
        records[name].save(out_dir / f"monitor_{name}.npz")
        numbers[name] = {
            "first_loss": losses[0],
            "final_loss": float(np.mean(losses[-10:])),
            "recorded_steps": len(records[name].steps),
        }
    return {"records": records, "numbers": numbers, "steps": steps, "every": every}
