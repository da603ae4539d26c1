"""Untuned warmup against RAdam on the Transformer (Ma & Yarats, "On the adequacy of untuned
warmup for adaptive optimization", arXiv 1910.04209).

Ma & Yarats argue that RAdam's benefit is that of a warmup: its rectification acts like a
learning-rate warmup over about 2 / (1 - β2) updates, and Adam with an *untuned* warmup of that
length, linear min(1, t (1 - β2) / 2) or exponential 1 - exp(-(1 - β2) t), does as well as RAdam.
"""

from __future__ import annotations

import numpy as np

import rectified
from rectified.experiments import figures, needs, recipes
from rectified.experiments.budgets import Budget
from rectified.experiments.records import Run
from rectified.experiments.sections.common import (
    Section,
    SectionResult,
    matches,
    metric_of,
    ordered,
    summary_table,
)
from rectified.experiments.spec import RunSpec

RECIPES = ("adam", "adam-untuned", "adam-untuned-exp", "radam")


def specs(b: Budget) -> list[RunSpec]:
    return [b.transformer.spec(name, seed) for name in RECIPES for seed in b.seeds]


def share_curves(steps: int, beta2: float) -> dict[str, np.ndarray]:
    """Fraction of Adam's step per update: RAdam's r_t and the two untuned warmups."""
    t = range(1, steps + 1)
    linear, exponential = recipes.untuned_linear(beta2), recipes.untuned_exponential(beta2)
    return {"radam r_t": np.array([rectified.rectification_term(s, beta2) for s in t]),
            "untuned linear": np.array([linear(s) for s in t]),
            "untuned exponential": np.array([exponential(s) for s in t])}


def analyze(runs: list[Run], result: SectionResult) -> None:
    groups = ordered(runs, RECIPES)
    metric, higher = metric_of(runs)
    result.tables.append(summary_table(groups, metric, "Final numbers, mean ± sd over seeds"))
    beta2 = needs.beta2_of(runs[0].spec) or 0.999
    result.figures.append((
        "Training loss (mean over seeds, band: min-max) and the fraction of Adam's step each "
        "schedule lets through",
        figures.png_bytes(figures.curves_with_shares(
            groups, "train_loss", "training loss", share_curves(runs[0].spec.steps, beta2),
            f"untuned warmup vs RAdam (β2 = {beta2:g})"))))

    def group(name: str) -> list[Run]:
        return groups.get(name, [])

    result.verdicts += [
        matches(f"Adam with the untuned linear warmup ({round(2 / (1 - beta2))} steps) does as "
                "well as RAdam", "adam-untuned", group("adam-untuned"), "radam", group("radam"),
                higher),
        matches("Adam with the untuned exponential warmup does as well as RAdam",
                "adam-untuned-exp", group("adam-untuned-exp"), "radam", group("radam"), higher),
    ]
    result.notes.append(
        "Warmup periods Σ_t (1 - share_t): " + ", ".join(
            f"{name} {float(np.sum(1 - curve)):.0f} updates within this run"
            for name, curve in share_curves(runs[0].spec.steps, beta2).items())
        + f" (1 / (1 - β2) = {1 / (1 - beta2):.0f}).")


SECTION = Section(
    "untuned", "Untuned warmup vs RAdam (Ma & Yarats, arXiv 1910.04209)",
    "Ma & Yarats: RAdam's rectification is a warmup in disguise; Adam with an untuned "
    "warmup over 2 / (1 - β2) steps (linear, or exponential with time constant 1 / (1 - β2)) "
    "does as well as RAdam without any tuning.", specs, analyze)
