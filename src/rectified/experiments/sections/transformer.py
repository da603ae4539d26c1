"""Transformer LM: why warmup helps (Liu et al., arXiv 1908.03265, Section 3, Figures 1-3).

A post-LN Transformer at a learning rate where Adam without warmup fails; Adam with a linear
warmup, Adam with ε = 1e-4 and RAdam; |gradient| histograms over the first updates.
"""

from __future__ import annotations

import math

import numpy as np

from rectified.experiments import figures, needs, verdicts
from rectified.experiments.budgets import Budget
from rectified.experiments.records import Run
from rectified.experiments.sections.common import (
    Section,
    SectionResult,
    Table,
    better,
    cell,
    matches,
    metric_of,
    ordered,
    specs_of,
    summary_table,
)
from rectified.experiments.spec import RunSpec

RECIPES = ("adam", "adam-warmup", "adam-eps", "radam")


def specs(b: Budget) -> list[RunSpec]:
    return [b.transformer.spec(name, seed, monitor_steps=b.monitor_steps,
                               warmup=b.transformer_warmup if name == "adam-warmup" else None)
            for name in RECIPES for seed in b.seeds]


def gradient_histogram(run: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(steps, log10 edges, counts) of the run's monitor record, or None if it has none that
    this version can read."""
    path = run.folder / "monitor.npz"
    if not path.is_file():
        return None
    from rectified.variance import VarianceMonitor

    try:
        return VarianceMonitor.load(path).gradient_histogram()
    except (ValueError, KeyError, OSError):
        return None


def distortion(run: Run) -> float:
    """Decades by which the median |gradient| fell from the first to the last monitored
    update (NaN without a monitor record); large values are the paper's 'distorted'
    distribution, mass piling up at tiny gradients."""
    histogram = gradient_histogram(run)
    if histogram is None or len(histogram[0]) < 2:
        return math.nan
    _, edges, counts = histogram
    return figures.median_log10(edges, counts[0]) - figures.median_log10(edges, counts[-1])


def analyze(runs: list[Run], result: SectionResult) -> None:
    groups = ordered(runs, RECIPES)
    metric, higher = metric_of(runs)
    result.tables.append(summary_table(groups, metric, "Final numbers, mean ± sd over seeds"))
    result.figures.append((
        "Training loss and validation perplexity (mean over seeds, band: min-max)",
        figures.png_bytes(figures.curves(groups, [("train_loss", "training loss"),
                                                  ("metric", metric)],
                                         "post-LN Transformer LM", log_y=(False, True)))))
    panels = []
    for name in ("adam", "adam-warmup", "radam"):
        first = min(groups.get(name, []), key=lambda r: r.spec.seed, default=None)
        histogram = gradient_histogram(first) if first is not None else None
        if first is not None and histogram is not None:
            panels.append((f"{name} (seed {first.spec.seed})", *histogram))
    if panels:
        result.figures.append((
            "|gradient| histograms over the first updates (log10 |g| bins; Figures 1-2)",
            figures.png_bytes(figures.histogram_panels(panels, "|gradient| per update"))))
    drops = {name: [distortion(r) for r in group] for name, group in groups.items()}
    result.tables.append(Table(
        "Fall of the median log10 |gradient| from the first to the last monitored update",
        ["optimizer", "decades (mean ± sd)"],
        [[name, cell(values, 3)] for name, values in drops.items()]))

    def group(name: str) -> list[Run]:
        return groups.get(name, [])

    result.verdicts += [
        better("Without warmup Adam ends worse than with warmup", "adam-warmup",
               group("adam-warmup"), "adam", group("adam"), higher),
        better("Adam-eps (eps 1e-4) beats plain Adam", "adam-eps", group("adam-eps"), "adam",
               group("adam"), higher),
        better("RAdam beats plain Adam", "radam", group("radam"), "adam", group("adam"), higher),
        matches("RAdam does as well as Adam with warmup", "radam", group("radam"),
                "adam-warmup", group("adam-warmup"), higher),
        verdicts.gated(verdicts.better(
            "Without warmup the |gradient| distribution is distorted more", "adam",
            drops.get("adam", []), "adam-warmup", drops.get("adam-warmup", []), True),
            needs.long_enough(specs_of([*group("adam"), *group("adam-warmup")]))),
    ]


SECTION = Section(
    "transformer", "Transformer LM: why warmup helps (Figures 1-3)",
    "Without warmup, Adam's adaptive learning rate has a large variance in the first updates, "
    "which distorts the gradient distribution and leads to worse results; bounding its "
    "variance (Adam-eps) or rectifying it (RAdam) avoids this.", specs, analyze)
