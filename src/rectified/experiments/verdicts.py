"""Verdicts computed from recorded numbers, with the rule that produced each one.

A verdict is one of ``reproduced``, ``not reproduced at this scale``, ``inconclusive`` or
``budget too short to test``. Seeds give the noise level: the *pooled spread* of two groups of
runs is √((sd_A² + sd_B²) / 2), the root mean square of their sample standard deviations over
seeds. Fewer than :data:`MIN_SEEDS` seeds per group always gives ``inconclusive``.

Every claim about training runs states the budget it needs (:class:`Need`, computed by
:mod:`rectified.experiments.needs`); :func:`gated` turns a verdict on runs below that need into
``budget too short to test``, with the measured number, whatever the comparison would say.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced at this scale"
INCONCLUSIVE = "inconclusive"
BUDGET_TOO_SHORT = "budget too short to test"
MIN_SEEDS = 3

BETTER_RULE = (
    "reproduced if {a}'s mean beats {b}'s by more than the pooled seed spread; not reproduced "
    "if {b}'s mean beats {a}'s by more than that; inconclusive otherwise"
)
MATCH_RULE = (
    "reproduced if {a}'s mean is no worse than {b}'s by more than the pooled seed spread; not "
    "reproduced if it is worse by more than twice that; inconclusive otherwise"
)


@dataclass(frozen=True)
class Stats:
    mean: float
    sd: float
    n: int


def stats(values: Sequence[float]) -> Stats:
    """Mean, sample standard deviation (0 for one value) and count of the finite values."""
    values = [float(v) for v in values if math.isfinite(float(v))]
    if not values:
        return Stats(math.nan, math.nan, 0)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return Stats(statistics.fmean(values), sd, len(values))


def pooled_spread(a: Stats, b: Stats) -> float:
    return math.sqrt((a.sd**2 + b.sd**2) / 2.0)


@dataclass(frozen=True)
class Verdict:
    claim: str
    status: str
    rule: str
    evidence: str  # the numbers the status was computed from, as text


@dataclass(frozen=True)
class Need:
    """Whether the runs behind a claim reach the budget it needs."""

    met: bool
    statement: str  # the need, e.g. "RAdam's mean r_t over every run >= 0.8"
    measured: str  # what the runs reach, e.g. "mean r_t 0.25 (300 steps, β2 = 0.999)"


def gated(verdict: Verdict, need: Need) -> Verdict:
    """``verdict`` with its need stated, or ``budget too short to test`` if the runs miss it."""
    rule = f"{verdict.rule}; decided only on runs that meet the need: {need.statement}"
    if need.met:
        return replace(verdict, rule=rule, evidence=f"{verdict.evidence}; budget: {need.measured}")
    return Verdict(verdict.claim, BUDGET_TOO_SHORT, rule,
                   f"budget: {need.measured}, below the need. Not a verdict: {verdict.evidence}")


def _advantage(a: Stats, b: Stats, higher_is_better: bool) -> float:
    """How much better a is than b (positive when a is better)."""
    return (a.mean - b.mean) if higher_is_better else (b.mean - a.mean)


def _evidence(name_a: str, a: Stats, name_b: str, b: Stats, spread: float) -> str:
    return (f"{name_a} {a.mean:.4g} ± {a.sd:.2g} (n={a.n}), {name_b} {b.mean:.4g} ± {b.sd:.2g} "
            f"(n={b.n}); difference {abs(a.mean - b.mean):.3g}, pooled spread {spread:.3g}")


def _pairwise(claim: str, rule: str, name_a: str, a_values: Sequence[float], name_b: str,
              b_values: Sequence[float], higher_is_better: bool, judge) -> Verdict:
    """Shared by the two-optimizer rules: ``judge(advantage of A, pooled spread)`` decides,
    unless a side has too few seeds or a non-finite mean (then inconclusive)."""
    a, b = stats(a_values), stats(b_values)
    spread = pooled_spread(a, b)
    evidence = _evidence(name_a, a, name_b, b, spread)
    if min(a.n, b.n) < MIN_SEEDS or not math.isfinite(a.mean + b.mean):
        return Verdict(claim, INCONCLUSIVE, rule, evidence + f"; fewer than {MIN_SEEDS} seeds")
    return Verdict(claim, judge(_advantage(a, b, higher_is_better), spread), rule, evidence)


def _better_status(advantage: float, spread: float) -> str:
    if advantage > spread:
        return REPRODUCED
    if -advantage > spread:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def _match_status(advantage: float, spread: float) -> str:
    shortfall = -advantage
    if shortfall <= spread:
        return REPRODUCED
    if shortfall > 2 * spread:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def better(claim: str, name_a: str, a_values: Sequence[float], name_b: str,
           b_values: Sequence[float], higher_is_better: bool) -> Verdict:
    """The verdict on "A is better than B"."""
    rule = BETTER_RULE.format(a=name_a, b=name_b)
    return _pairwise(claim, rule, name_a, a_values, name_b, b_values, higher_is_better,
                     _better_status)


def matches(claim: str, name_a: str, a_values: Sequence[float], name_b: str,
            b_values: Sequence[float], higher_is_better: bool) -> Verdict:
    """The verdict on "A does as well as B" (B typically a tuned baseline)."""
    rule = MATCH_RULE.format(a=name_a, b=name_b)
    return _pairwise(claim, rule, name_a, a_values, name_b, b_values, higher_is_better,
                     _match_status)


def all_of(claim: str, parts: Sequence[Verdict], rule: str) -> Verdict:
    """Budget too short if any part is; else reproduced if every part is, not reproduced if any
    part is not, inconclusive otherwise."""
    statuses = {p.status for p in parts}
    if not parts:
        status = INCONCLUSIVE
    elif BUDGET_TOO_SHORT in statuses:
        status = BUDGET_TOO_SHORT
    elif statuses == {REPRODUCED}:
        status = REPRODUCED
    elif NOT_REPRODUCED in statuses:
        status = NOT_REPRODUCED
    else:
        status = INCONCLUSIVE
    return Verdict(claim, status, rule, "; ".join(f"[{p.claim}: {p.status}] {p.evidence}"
                                                  for p in parts))
