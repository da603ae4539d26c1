"""Run folders read back as records, grouped and summarised for the report."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rectified.experiments import runner
from rectified.experiments.spec import RunSpec


@dataclass(frozen=True)
class Run:
    folder: Path
    spec: RunSpec
    summary: dict[str, Any]
    rows: list[dict[str, float]]

    @property
    def final(self) -> float:
        return float(self.summary["final_metric"])

    def curve(self, column: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of a metrics column, rows where it is recorded only."""
        points = [(r["step"], r[column]) for r in self.rows if not math.isnan(r[column])]
        if not points:
            return np.zeros(0), np.zeros(0)
        steps, values = zip(*points, strict=True)
        return np.asarray(steps), np.asarray(values)


def load_runs(folder: str | Path) -> list[Run]:
    """Every complete run folder directly under ``folder``, sorted by name."""
    root = Path(folder)
    if not root.is_dir():
        return []
    return [load_run(child) for child in sorted(root.iterdir())
            if child.is_dir() and runner.is_complete(child)]


def load_run(folder: str | Path) -> Run:
    """The record of one complete run folder."""
    return Run(Path(folder), *runner.load_run(folder))


def run_folders(folder: str | Path) -> list[Path]:
    """Run folders (those holding ``spec.json``, complete or not) at ``folder`` itself, or one
    or two levels under it (``train``/``sweep`` write ``OUT/<run>``, ``reproduce`` writes
    ``OUT/runs/<section>/<run>``), sorted by path."""
    root = Path(folder)
    for pattern in ("spec.json", "*/spec.json", "*/*/spec.json"):
        found = sorted(p.parent for p in root.glob(pattern) if p.is_file())
        if found:
            return found
    return []


def group_by(runs: Iterable[Run], key: Callable[[Run], Hashable]) -> dict[Any, list[Run]]:
    groups: dict[Any, list[Run]] = defaultdict(list)
    for run in runs:
        groups[key(run)].append(run)
    return dict(groups)


def mean_curve(runs: list[Run], column: str, smooth: int = 1
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, min, max) over runs of a column, on the steps all runs share.

    ``smooth`` > 1 averages each run over a trailing window of that many rows first.
    """
    curves = [run.curve(column) for run in runs]
    length = min((len(steps) for steps, _ in curves), default=0)
    if length == 0:
        empty = np.zeros(0)
        return empty, empty, empty, empty
    values = np.stack([_smooth(v[:length], smooth) for _, v in curves])
    with np.errstate(invalid="ignore"):
        return curves[0][0][:length], values.mean(0), values.min(0), values.max(0)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1:
        return values
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    starts = np.arange(1, len(values) + 1) - counts
    return (cumulative[1:] - cumulative[starts]) / counts
