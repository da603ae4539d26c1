"""The variance lab's files: :func:`write_lab` runs :mod:`~rectified.variance.lab` and
writes its tables (CSV), figures (PNG, with matplotlib) and numbers (``variance_lab.json``);
the files are listed in :mod:`rectified.variance.command`.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from rectified.variance.lab import (
    BETA2S,
    EMA_BETA2,
    monitored_runs,
    rectification_table,
    variance_vs_rho,
    variance_vs_step,
)
from rectified.variance.monitor import QUANTILE_LEVELS


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)

def _json_value(x: Any) -> Any:
    """numpy scalars as Python numbers, for json.dump."""
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")

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

    figures: dict[str, Path] = {}
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
        for ax, (steps, edges, counts), what in (
            (row[0], record.gradient_histogram(), "gradient"),
            (row[1], record.update_histogram(), "update"),
        ):
            plot_histogram_heatmap(steps, edges, counts, ax=ax, title=f"{name}: |{what}|")
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
