"""``rectified variance [--out DIR] [--quick]``: the variance lab's figures and numbers.

Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond" (arXiv 1908.03265),
Sections 3-4. :func:`write_lab` writes into ``out_dir``:

* ``variance_vs_rho.csv`` / ``.png``: Var[ψ] of Theorem 1, its first-order form and Monte Carlo
  of ψ = τ √(ρ / χ²_ρ), for ρ from just above 4 to 2000;
* ``variance_vs_step.csv`` / ``.png``: Monte Carlo of ψ_t = √(t / Σ g_i²) (simple average) and
  of Adam's EMA form, for i.i.d. N(0, 1) gradients, against the theory at ρ = t and ρ = ρ_t;
  the variance at t = 1, 2 (infinite in theory) shows as a blow-up;
* ``rectification.csv`` / ``rectification_vs_warmup.png``: ρ_t, r_t and linear warmup for
  several β2, and r_t² Var[ψ(ρ_t)] / Var[ψ(ρ_∞)] (1 to first order);
* ``monitor_<optimizer>.npz``, ``adaptive_lr.csv``, ``histograms.png``: a small MLP trained
  with Adam, Adam with linear warmup and RAdam under a :class:`VarianceMonitor`, and heat maps
  of log10 |gradient| and |update| over iterations;
* ``variance_lab.json``: the numbers below and the paths of every file written.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
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
from rectified.variance.monitor import QUANTILE_LEVELS, VarianceMonitor
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


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)


def _theory_or_nan(rho: float) -> float:
    return adaptive_lr_variance(rho) if rho > 4.0 else math.nan


def _json_value(x: Any) -> Any:
    """numpy scalars as Python numbers, for json.dump."""
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


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


# -- files ------------------------------------------------------------------------------------
def _write_tables(out_dir: Path, parts: dict[str, Any]) -> dict[str, str]:
    by_rho, by_step, rect, runs = parts["rho"], parts["step"], parts["rect"], parts["runs"]
    tables = {name: out_dir / f"{name}.csv" for name in ("variance_vs_rho", "variance_vs_step")}
    tables["rectification"] = out_dir / "rectification.csv"
    tables["adaptive_lr"] = out_dir / "adaptive_lr.csv"
    mc = by_rho["mc"]
    _write_csv(
        tables["variance_vs_rho"],
        ["rho", "var_theorem", "var_first_order", "var_monte_carlo", "monte_carlo_std_error"],
        [
            list(row)
            for row in zip(
                by_rho["rhos"],
                by_rho["theory"],
                by_rho["first_order"],
                mc.variance,
                mc.variance_standard_error,
            )
        ],
    )
    _write_csv(
        tables["variance_vs_step"],
        [
            "step",
            "var_sma_monte_carlo",
            "var_sma_theorem",
            "rho_t",
            "var_ema_monte_carlo",
            "var_ema_theorem_at_rho_t",
        ],
        [
            list(row)
            for row in zip(
                by_step["t"],
                by_step["sma"].variance,
                by_step["sma_theory"],
                by_step["rhos"],
                by_step["ema"].variance,
                by_step["ema_theory"],
            )
        ],
    )
    _write_csv(
        tables["rectification"],
        ["step", "beta2", "rho_t", "r_t", "linear_warmup", "rectified_variance_ratio"],
        rect["rows"],
    )
    levels = [f"q{round(100 * q):02d}" for q in QUANTILE_LEVELS]
    rows = []
    for name, record in runs["records"].items():
        stats = record.adaptive_lr_stats()
        for k, step in enumerate(stats.steps):
            for j, layer in enumerate(stats.layers):
                mean, variance = stats.mean[k, j], stats.variance[k, j]
                rows.append([name, int(step), layer, mean, variance, *stats.quantiles[k, j]])
    _write_csv(
        tables["adaptive_lr"], ["optimizer", "step", "layer", "mean", "variance", *levels], rows
    )
    return {name: str(path) for name, path in tables.items()}


def _write_figures(out_dir: Path, parts: dict[str, Any]) -> dict[str, str]:
    from matplotlib.figure import Figure

    from rectified.variance.plots import (
        plot_histogram_heatmap,
        plot_rectification_vs_warmup,
        plot_theory_vs_simulation,
    )

    figures: dict[str, str] = {}
    by_rho, by_step, rect, runs = parts["rho"], parts["step"], parts["rect"], parts["runs"]

    ax = plot_theory_vs_simulation(
        by_rho["rhos"],
        by_rho["mc"].variance,
        by_rho["rhos"],
        by_rho["theory"],
        first_order=by_rho["first_order"],
    )
    figures["variance_vs_rho"] = out_dir / "variance_vs_rho.png"
    ax.figure.savefig(figures["variance_vs_rho"], dpi=100)

    figure = Figure(figsize=(11.0, 4.0), layout="constrained")
    sma_ax, ema_ax = figure.subplots(1, 2)
    t = by_step["t"]
    plot_theory_vs_simulation(
        t,
        by_step["sma"].variance,
        t,
        by_step["sma_theory"],
        xlabel="step t (ρ = t)",
        ax=sma_ax,
        title="ψ_t = √(t / Σ g²): Var vs t",
    )
    plot_theory_vs_simulation(
        t,
        by_step["ema"].variance,
        t,
        by_step["ema_theory"],
        xlabel=f"step t (theory at ρ = ρ_t, β2 = {EMA_BETA2})",
        ax=ema_ax,
        title="Adam's EMA form of ψ_t: Var vs t",
    )
    figures["variance_vs_step"] = out_dir / "variance_vs_step.png"
    figure.savefig(figures["variance_vs_step"], dpi=100)

    ax = plot_rectification_vs_warmup(rect["steps"], BETA2S)
    figures["rectification_vs_warmup"] = out_dir / "rectification_vs_warmup.png"
    ax.figure.savefig(figures["rectification_vs_warmup"], dpi=100)

    records = runs["records"]
    figure = Figure(figsize=(11.0, 3.2 * len(records)), layout="constrained")
    axes = figure.subplots(len(records), 2, squeeze=False)
    for row, (name, record) in zip(axes, records.items()):
        plot_histogram_heatmap(*record.gradient_histogram(), ax=row[0], title=f"{name}: |gradient|")
        plot_histogram_heatmap(*record.update_histogram(), ax=row[1], title=f"{name}: |update|")
    figures["histograms"] = out_dir / "histograms.png"
    figure.savefig(figures["histograms"], dpi=100)
    return {name: str(path) for name, path in figures.items()}


def write_lab(out_dir: Path, quick: bool = False) -> dict[str, Any]:
    """Write the lab's figures (PNG) and numbers (CSV, JSON) into ``out_dir``.

    Returns ``{"numbers": {...}, "figures": {name: path}, "tables": {name: path},
    "records": {optimizer: path}, "json": path, "seconds": float}``; ``numbers`` has the keys
    ``variance_vs_rho``, ``variance_vs_step``, ``rectification`` and ``monitored_runs``.
    ``quick`` uses fewer samples and steps (a few seconds instead of well under a minute).
    Figures need matplotlib; without it ``figures`` is empty and ``notes`` says so.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"Invalid out value: {out_dir} (exists and is not a directory)")
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = {
        "rho": variance_vs_rho(quick),
        "step": variance_vs_step(quick),
        "rect": rectification_table(quick),
        "runs": monitored_runs(out_dir, quick),
    }
    result: dict[str, Any] = {
        "quick": quick,
        "numbers": {
            "variance_vs_rho": parts["rho"]["numbers"],
            "variance_vs_step": parts["step"]["numbers"],
            "rectification": parts["rect"]["numbers"],
            "monitored_runs": {
                "steps": parts["runs"]["steps"],
                "every": parts["runs"]["every"],
                **parts["runs"]["numbers"],
            },
        },
        "tables": _write_tables(out_dir, parts),
        "records": {
            name: str(out_dir / f"monitor_{name}.npz") for name in parts["runs"]["records"]
        },
        "notes": [],
    }
    try:
        result["figures"] = _write_figures(out_dir, parts)
    except ImportError:
        result["figures"] = {}
        result["notes"].append(
            "matplotlib is not installed: no figures (pip install 'rectified[plot]')"
        )
    result["json"] = str(out_dir / "variance_lab.json")
    result["seconds"] = time.perf_counter() - start
    with open(result["json"], "w") as file:
        json.dump(result, file, indent=2, default=_json_value)
    return result


# -- command line -----------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("variance-lab"),
        help="output folder (default variance-lab)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer samples and steps: seconds")


def run(args: argparse.Namespace) -> int:
    result = write_lab(args.out, quick=args.quick)
    numbers = result["numbers"]
    by_rho, by_step = numbers["variance_vs_rho"], numbers["variance_vs_step"]
    print(f"Var[psi] decreasing in rho: {by_rho['decreasing_in_rho']}")
    print(
        f"Var[psi] Monte Carlo vs Theorem 1: max |z| {by_rho['max_abs_z_monte_carlo_rho_ge_8']:.2f}"
        f" (rho >= 8, {by_rho['samples']} samples)"
    )
    print(
        f"Var[psi_t] simulated at t = 1, 2, 10: {by_step['sma_variance_t1']:.3g}, "
        f"{by_step['sma_variance_t2']:.3g}, {by_step['sma_variance_t10']:.3g}"
    )
    worst = numbers["rectification"]["max_abs_ratio_minus_1_rho_t_ge_20"]
    print(
        "r_t^2 Var[psi(rho_t)] / Var[psi(rho_inf)] - 1, worst for rho_t >= 20: "
        + ", ".join(f"beta2 {b}: {v:.3g}" for b, v in worst.items())
    )
    for note in result["notes"]:
        print(note)
    print(
        f"wrote {len(result['tables'])} tables and {len(result['figures'])} figures to {args.out}"
        f" in {result['seconds']:.1f} s"
    )
    return 0
