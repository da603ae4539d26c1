"""Figures of the report, drawn from run records.

Figures are plain ``matplotlib.figure.Figure`` objects rendered to PNG by the Agg canvas, so
drawing them neither needs a display nor changes pyplot's global backend.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter

from rectified.experiments.records import Run, mean_curve


def png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def curves(groups: Mapping[str, list[Run]], columns: Sequence[tuple[str, str]],
           title: str, log_y: Sequence[bool] = ()) -> Figure:
    """One panel per (column, label): mean over seeds with a min-max band, one line per group.

    Training loss is smoothed over a trailing window of 1/50 of the run.
    """
    figure = Figure(figsize=(5.2 * len(columns), 3.6))
    axes = figure.subplots(1, len(columns), squeeze=False)
    for index, (column, label) in enumerate(columns):
        ax = axes[0][index]
        for name, runs in groups.items():
            smooth = max(1, len(runs[0].rows) // 50) if column == "train_loss" else 1
            steps, mean, low, high = mean_curve(runs, column, smooth)
            if len(steps) == 0:
                continue
            (line,) = ax.plot(steps, mean, label=f"{name} (n={len(runs)})", linewidth=1.4)
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.18, linewidth=0)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        if index < len(log_y) and log_y[index]:
            _log_scale_with_plain_labels(ax)
        ax.grid(alpha=0.3)
        _clip_to_finite(ax)
        if ax.lines:
            ax.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def _log_scale_with_plain_labels(ax: Axes) -> None:
    """A log y axis whose ticks read 10, 20, 30 rather than 10^1, 2x10^1 (perplexities span
    less than a decade here, where only minor ticks fall)."""
    ax.set_yscale("log")
    for axis_formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        axis_formatter(FormatStrFormatter("%g"))


def _clip_to_finite(ax: Axes) -> None:
    """Keep a diverged curve from flattening the others: the y range ends at the 98th
    percentile of the plotted finite values (for losses, where lower is the story)."""
    values = np.concatenate([np.asarray(line.get_ydata(), dtype=float) for line in ax.lines]
                            or [np.zeros(0)])
    values = values[np.isfinite(values)]
    if len(values) and ax.get_yscale() == "linear":
        low, high = float(values.min()), float(np.percentile(values, 98))
        if high > low:
            ax.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))


X = TypeVar("X", int, float)  # the x of a line: a step budget or a learning rate


def _errorbars(ax: Axes, series: Mapping[str, Mapping[X, Sequence[float]]]) -> None:
    """One line per series: mean ± sd over seeds at each x."""
    for name, by_x in series.items():
        xs = sorted(by_x)
        if not xs:
            continue
        means = [float(np.mean(by_x[x])) for x in xs]
        sds = [float(np.std(by_x[x], ddof=1)) if len(by_x[x]) > 1 else 0.0 for x in xs]
        ax.errorbar(xs, means, yerr=sds, marker="o", capsize=3, label=name, linewidth=1.3)


def final_vs_lr(series: Mapping[str, Mapping[float, Sequence[float]]], metric: str,
                title: str, log_y: bool = False) -> Figure:
    """Final metric (mean ± sd over seeds) against the learning rate, one line per series."""
    figure = Figure(figsize=(6.0, 3.8))
    ax = figure.subplots()
    _errorbars(ax, series)
    ax.set_xscale("log")
    if log_y:
        _log_scale_with_plain_labels(ax)
    ax.set_xlabel("learning rate")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    figure.tight_layout()
    return figure


def histogram_panels(panels: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
                     title: str) -> Figure:
    """Heatmaps of |gradient| histograms over the first steps, one panel per run.

    Each panel is (label, steps, log10 bin edges, counts[n_steps, n_bins]).
    """
    from rectified.variance.plots import plot_histogram_heatmap

    columns = len(panels)
    figure = Figure(figsize=(4.2 * columns, 3.6))
    axes = figure.subplots(1, columns, squeeze=False)
    for ax, (label, steps, edges, counts) in zip(axes[0], panels, strict=True):
        plot_histogram_heatmap(steps, edges, counts, ax=ax, title=label)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def median_log10(edges: np.ndarray, counts: np.ndarray) -> float:
    """The median of log10 |x| of a binned histogram (linear inside the bin)."""
    total = counts.sum()
    if total <= 0:
        return math.nan
    cumulative = np.cumsum(counts)
    index = int(np.searchsorted(cumulative, total / 2.0))
    before = cumulative[index - 1] if index else 0
    inside = (total / 2.0 - before) / max(counts[index], 1)
    return float(edges[index] + inside * (edges[index + 1] - edges[index]))


def budget_scaling(series: Mapping[str, Mapping[int, Sequence[float]]],
                   gaps: Mapping[str, Mapping[int, tuple[float, float]]],
                   shares: Mapping[int, float], metric: str, title: str) -> Figure:
    """Left: final metric (mean ± sd over seeds) against the step budget, one line per
    optimizer. Right: each gap (signed advantage over Adam, ± the pooled seed spread) against
    the budget, with RAdam's mean r_t over the run on a second axis."""
    figure = Figure(figsize=(11.0, 3.8))
    left, right = figure.subplots(1, 2)
    _errorbars(left, series)
    left.set_ylabel(f"final {metric}")
    left.set_title(title)
    for name, by_steps in gaps.items():
        steps = sorted(by_steps)
        if steps:
            right.errorbar(steps, [by_steps[s][0] for s in steps],
                           yerr=[by_steps[s][1] for s in steps], marker="o", capsize=3,
                           label=name, linewidth=1.3)
    right.axhline(0.0, color="black", linewidth=0.8)
    right.set_ylabel(f"advantage over Adam ({metric})")
    right.set_title("> 0: better than Adam")
    share = right.twinx()
    steps = sorted(shares)
    share.plot(steps, [shares[s] for s in steps], "--", color="grey", marker=".",
               label="RAdam's mean r_t")
    share.set_ylim(0.0, 1.05)
    share.set_ylabel("RAdam's mean r_t over the run")
    lines, labels = right.get_legend_handles_labels()
    more, more_labels = share.get_legend_handles_labels()
    right.legend(lines + more, labels + more_labels, fontsize=8)
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xticks(steps, [str(s) for s in steps])
        ax.minorticks_off()
        ax.set_xlabel("steps (budget)")
        ax.grid(alpha=0.3)
    left.legend(fontsize=8)
    figure.tight_layout()
    return figure


def curves_with_shares(groups: Mapping[str, list[Run]], column: str, label: str,
                       shares: Mapping[str, np.ndarray], title: str) -> Figure:
    """Left: one metrics column per group (mean over seeds, min-max band). Right: the fraction
    of Adam's step each schedule lets through, against the update."""
    figure = Figure(figsize=(11.0, 3.8))
    left, right = figure.subplots(1, 2)
    for name, runs in groups.items():
        smooth = max(1, len(runs[0].rows) // 50) if column == "train_loss" else 1
        steps, mean, low, high = mean_curve(runs, column, smooth)
        if len(steps):
            (line,) = left.plot(steps, mean, label=f"{name} (n={len(runs)})", linewidth=1.4)
            left.fill_between(steps, low, high, color=line.get_color(), alpha=0.18, linewidth=0)
    left.set_ylabel(label)
    _clip_to_finite(left)
    for name, values in shares.items():
        right.plot(np.arange(1, len(values) + 1), values, label=name, linewidth=1.4)
    right.set_ylabel("fraction of Adam's step")
    right.set_ylim(0.0, 1.05)
    for ax in (left, right):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return figure
