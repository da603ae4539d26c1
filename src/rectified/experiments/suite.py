"""The reproduce suite: one section per claim of the paper, each a list of runs plus the rule
that turns their recorded numbers into a verdict.

Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond" (arXiv 1908.03265):
Section 3 (why warmup helps: Figures 1-3, Adam-2k), Section 5 (Table 1, Figures 4-7); and the
counter-claim of Ma & Yarats (arXiv 1910.04209) that an untuned warmup does as well as RAdam.
Each section's ``analyze`` reads run records only, so ``rectified report`` rebuilds every number
from the run folders. Every verdict on training runs states the budget it needs
(:mod:`rectified.experiments.needs`) and is "budget too short to test" below it. The budgets
(:mod:`rectified.experiments.budgets`) scale the same sections.
"""

from __future__ import annotations

from dataclasses import replace

from rectified.experiments.budgets import BUDGETS, Budget, Setup, get_budget
from rectified.experiments.records import Run
from rectified.experiments.sections import adam2k, scaling, sweeps, transformer, untuned
from rectified.experiments.sections.common import (
    Section,
    SectionResult,
    Table,
    rectification_note,
    setup_text,
)
from rectified.experiments.spec import RunSpec

__all__ = ["BUDGETS", "SECTIONS", "Budget", "Section", "SectionResult", "Setup", "Table",
           "analyze", "get_budget", "section_specs"]

SECTIONS: tuple[Section, ...] = (
    transformer.SECTION,
    adam2k.SECTION,
    untuned.SECTION,
    sweeps.TRANSFORMER_LR,
    scaling.IMAGE,
    scaling.LSTM,
    scaling.DIGITS,
    sweeps.ROBUSTNESS,
    sweeps.WARMUP,
)


def section_specs(section: Section, budget: Budget) -> list[RunSpec]:
    """The section's runs at ``budget``, resolved (empty if the budget leaves it out)."""
    return [replace(spec, group=section.key).resolve() for spec in section.specs(budget)]


def analyze(section: Section, runs: list[Run]) -> SectionResult:
    result = SectionResult(section.key, section.title, section.claim, setup_text(runs))
    if runs:
        section.analyze(runs, result)
        note = rectification_note(runs)
        if note:
            result.notes.append(note)
    else:
        result.notes.append("No complete runs: nothing to analyze.")
    return result
