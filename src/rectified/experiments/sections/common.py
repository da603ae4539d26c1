"""What every section shares: the result it fills, and helpers over groups of run records."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

import rectified
from rectified.experiments import needs, verdicts
from rectified.experiments.budgets import Budget
from rectified.experiments.records import Run, group_by
from rectified.experiments.spec import RunSpec


@dataclass
class Table:
    caption: str
    headers: list[str]
    rows: list[list[str]]


@dataclass
class SectionResult:
    key: str
    title: str
    claim: str
    setup: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[str, bytes]] = field(default_factory=list)  # (caption, PNG)
    verdicts: list[verdicts.Verdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Section:
    key: str  # folder name under runs/
    title: str
    claim: str  # what the paper claims, with its figure or table
    specs: Callable[[Budget], list[RunSpec]]  # empty: the section is not in that budget
    analyze: Callable[[list[Run], SectionResult], None]


def cell(values: Sequence[float], digits: int = 4) -> str:
    s = verdicts.stats(values)
    return f"{s.mean:.{digits}g} ± {s.sd:.2g}"


def finals(runs: Sequence[Run]) -> list[float]:
    return [r.final for r in runs]


def specs_of(runs: Sequence[Run]) -> list[RunSpec]:
    return [r.spec for r in runs]


def metric_of(runs: Sequence[Run]) -> tuple[str, bool]:
    """(metric name, higher is better) of the runs' task."""
    return runs[0].summary["metric_name"], bool(runs[0].summary["higher_is_better"])


def ordered(runs: list[Run], order: Sequence[str]) -> dict[str, list[Run]]:
    """The runs grouped by recipe, in ``order`` (recipes not in it are left out)."""
    groups = group_by(runs, lambda r: r.spec.optimizer)
    return {name: groups[name] for name in order if name in groups}


def arm(run: Run) -> str:
    """A run's recipe with its warmup length where it has one: ``adam-warmup 40``."""
    return run.spec.optimizer + (f" {run.spec.warmup}" if run.spec.warmup else "")


def setup_text(runs: list[Run]) -> str:
    """What ran, read back from the specs."""
    if not runs:
        return "no complete runs found"
    first = runs[0].spec
    seeds = sorted({r.spec.seed for r in runs})
    steps = ", ".join(str(s) for s in sorted({r.spec.steps for r in runs}))
    options = ", ".join(f"{k}={v}" for k, v in first.task_options.items()
                        if v is not None and k not in ("eval_windows", "train_bytes"))
    overrides = {k: v for r in runs for k, v in r.spec.optimizer_options.items()}
    extra = f"; optimizer options {overrides}" if overrides else ""
    seconds = sum(r.summary["seconds"] for r in runs)
    return (f"task {first.task} ({options}), {steps} steps of batch {first.batch_size}, "
            f"seeds {seeds}, {len(runs)} runs, {seconds:.0f} s of training in total{extra}")


def summary_table(groups: dict[str, list[Run]], metric: str, caption: str) -> Table:
    rows = []
    for name, runs in groups.items():
        rows.append([name, f"{runs[0].spec.lr:g}", str(len(runs)), cell(finals(runs)),
                     cell([r.summary["best_metric"] for r in runs]),
                     cell([r.summary["final_train_loss"] for r in runs]),
                     str(sum(bool(r.summary["diverged"]) for r in runs))])
    return Table(caption, ["optimizer", "lr", "seeds", f"final {metric}", f"best {metric}",
                           "final train loss", "diverged"], rows)


def better(claim: str, name_a: str, a: Sequence[Run], name_b: str, b: Sequence[Run],
           higher: bool) -> verdicts.Verdict:
    """"A beats B" on the final metric, decided only if both sides meet the budget need."""
    return verdicts.gated(verdicts.better(claim, name_a, finals(a), name_b, finals(b), higher),
                          needs.long_enough(specs_of([*a, *b])))


def matches(claim: str, name_a: str, a: Sequence[Run], name_b: str, b: Sequence[Run],
            higher: bool) -> verdicts.Verdict:
    """"A does as well as B" on the final metric, decided only if both meet the need."""
    return verdicts.gated(verdicts.matches(claim, name_a, finals(a), name_b, finals(b), higher),
                          needs.long_enough(specs_of([*a, *b])))


def rectification_note(runs: list[Run]) -> str:
    """How much of Adam's step RAdam took in these runs: r_t at the last step and on average.

    RAdam's r_t rises towards 1 over a few times 1 / (1 - β2) steps; a run much shorter than
    that trains RAdam with a smaller effective learning rate than Adam at the same lr.
    """
    budgets = sorted({(r.spec.steps, needs.beta2_of(r.spec)) for r in runs
                      if r.spec.optimizer in needs.RECTIFIED})
    if not budgets:
        return ""
    parts = [f"{needs.mean_rectification(steps, beta2):.2f} over {steps} steps "
             f"(last r_t {rectified.rectification_term(steps, beta2):.2f}, β2 = {beta2:g})"
             for steps, beta2 in budgets if beta2 is not None]
    return ("RAdam's mean rectification r_t, the fraction of Adam's step it takes at the same "
            "learning rate: " + "; ".join(parts) + f". The claims need at least "
            f"{needs.MIN_SHARE:g}; over the paper's tens of thousands of steps it is close to 1.")


def mean_over(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")
