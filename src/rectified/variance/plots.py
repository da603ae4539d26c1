"""Figures of the variance lab (needs the optional ``plot`` extra: matplotlib).

Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond" (arXiv 1908.03265):

* :func:`plot_theory_vs_simulation`: Var[ψ] from Theorem 1 (and its first-order form) against
  Monte Carlo, over ρ or over steps t;
* :func:`plot_rectification_vs_warmup`: r_t for several β2 against linear warmup
  min(t, T_w) / T_w, the comparison of the paper's Section 4;
* :func:`plot_histogram_heatmap`: histograms of log10 |gradient| or |update| over iterations,
  the style of the paper's Figures 1-2.

Every function draws on ``ax`` when given, otherwise on a new figure made without pyplot (no
display needed), and returns the axes; save with ``ax.figure.savefig(path)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rectified.variance.closed_forms import rectification_term, rho_inf

__all__ = [
    "new_axes",
    "plot_histogram_heatmap",
    "plot_rectification_vs_warmup",
    "plot_theory_vs_simulation",
]


def new_axes(figsize: tuple[float, float] = (6.0, 4.0)) -> Any:
    """Axes on a new matplotlib Figure (not registered with pyplot)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "rectified.variance.plots needs matplotlib: pip install 'rectified[plot]'"
        ) from error
    figure = Figure(figsize=figsize, layout="constrained")
    return figure.add_subplot()


def plot_theory_vs_simulation(
    x: Sequence[float] | np.ndarray,
    simulated: Sequence[float] | np.ndarray,
    theory_x: Sequence[float] | np.ndarray,
    theory: Sequence[float] | np.ndarray,
    *,
    first_order: Sequence[float] | np.ndarray | None = None,
    xlabel: str = "ρ (degrees of freedom)",
    simulated_label: str = "Monte Carlo",
    ax: Any = None,
    title: str = "Var[ψ]: Theorem 1 vs simulation",
) -> Any:
    """Simulated Var[ψ] (points) against the closed form (line) and its first-order form.

    Log-log axes: the closed form falls like 1/(2ρ) and the simulated variance blows up where
    the true one is infinite (t <= 2).
    """
    ax = new_axes() if ax is None else ax
    ax.plot(theory_x, theory, "-", color="C0", label="Theorem 1")
    if first_order is not None:
        ax.plot(theory_x, first_order, "--", color="C2", label="first-order approximation")
    ax.plot(x, simulated, "o", color="C1", markersize=3, label=simulated_label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Var[ψ]  (τ = 1)")
    ax.set_title(title)
    ax.legend()
    return ax


def plot_rectification_vs_warmup(
    steps: Sequence[int] | np.ndarray,
    beta2s: Sequence[float] = (0.99, 0.995, 0.999),
    warmup_steps: Sequence[float] | None = None,
    *,
    threshold: float = 4.0,
    ax: Any = None,
    title: str = "rectification r_t vs linear warmup",
) -> Any:
    """r_t (solid) against linear warmup min(t, T_w) / T_w (dashed), one colour per β2.

    ``warmup_steps`` defaults to T_w = 2 / (1 - β2) for each β2, the untuned warmup length of
    Ma & Yarats (arXiv 1910.04209). r_t is 0 where ρ_t <= ``threshold`` (default the paper's 4).
    """
    ax = new_axes() if ax is None else ax
    steps = np.asarray(steps)
    if warmup_steps is None:
        warmup_steps = [2.0 / (1.0 - b) for b in beta2s]
    if len(warmup_steps) != len(beta2s):
        raise ValueError(
            f"Invalid warmup_steps value: {list(warmup_steps)} (one per beta2 of {list(beta2s)})"
        )
    for k, (beta2, warmup) in enumerate(zip(beta2s, warmup_steps)):
        r = [rectification_term(int(t), beta2, threshold) for t in steps]
        ax.plot(steps, r, "-", color=f"C{k}", label=f"r_t, β2 = {beta2} (ρ_∞ = {rho_inf(beta2):g})")
        ax.plot(
            steps,
            np.minimum(steps, warmup) / warmup,
            "--",
            color=f"C{k}",
            label=f"warmup, T_w = {warmup:g}",
        )
    ax.set_xscale("log")
    ax.set_xlabel("step t")
    ax.set_ylabel("multiplier of the learning rate")
    ax.set_title(title)
    ax.legend(fontsize="small")
    return ax


def plot_histogram_heatmap(
    steps: np.ndarray,
    edges: np.ndarray,
    counts: np.ndarray,
    ax: Any = None,
    title: str = "log10 |x| over iterations",
) -> Any:
    """Heat map of histograms: x = step, y = log10 |x| bins, colour = log10(1 + count).

    ``counts`` is [n_steps, n_bins], as returned by the monitor's ``gradient_histogram`` and
    ``update_histogram``; each column is one recorded step.
    """
    steps, edges, counts = np.asarray(steps), np.asarray(edges), np.asarray(counts)
    if counts.shape != (len(steps), len(edges) - 1):
        raise ValueError(
            f"Invalid counts shape: {counts.shape} (expected {(len(steps), len(edges) - 1)})"
        )
    if len(steps) == 0:
        raise ValueError("Invalid steps value: [] (nothing was recorded)")
    ax = new_axes() if ax is None else ax
    # Column boundaries halfway between recorded steps, so uneven sampling shows as it is.
    if len(steps) > 1:
        middle = (steps[1:] + steps[:-1]) / 2.0
        x_edges = np.concatenate(
            [[steps[0] - (middle[0] - steps[0])], middle, [steps[-1] + (steps[-1] - middle[-1])]]
        )
    else:
        x_edges = np.array([steps[0] - 0.5, steps[0] + 0.5])
    mesh = ax.pcolormesh(x_edges, edges, np.log10(1.0 + counts.T), shading="flat", cmap="viridis")
    ax.figure.colorbar(mesh, ax=ax, label="log10(1 + count)")
    ax.set_xlabel("step")
    ax.set_ylabel("log10 |x|")
    ax.set_title(title)
    return ax
