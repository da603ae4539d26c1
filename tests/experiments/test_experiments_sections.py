"""The reproduce sections' machinery on fabricated run records (no training): which budgets can
decide which claims, and verdicts that follow the recorded numbers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from rectified.experiments import figures, interpretation, suite, tasks, verdicts
from rectified.experiments.records import Run
from rectified.experiments.spec import RunSpec

Value = Callable[[RunSpec], float]


@pytest.fixture(autouse=True)
def no_rendering(monkeypatch: pytest.MonkeyPatch) -> None:
    """Figures are built but not rendered to PNG: these tests are about the verdicts."""
    monkeypatch.setattr(figures, "png_bytes", lambda figure: b"")


def seed_noise(spec: RunSpec) -> float:
    return 0.001 * spec.seed


def plausible(spec: RunSpec) -> float:
    """The same final metric for every optimizer, up to seed noise."""
    base = 0.9 if tasks.get_task(spec.task).higher_is_better else 10.0
    return base + seed_noise(spec)


def fake_runs(section: suite.Section, budget: str, value: Value = plausible) -> list[Run]:
    """One record per run of the section at the budget, its final metric ``value(spec)``."""
    runs = []
    for spec in suite.section_specs(section, suite.BUDGETS[budget]):
        task = tasks.get_task(spec.task)
        final = value(spec)
        rows = [{"step": float(step), "train_loss": 2.0 + final, "lr": spec.lr, "seconds": 0.0,
                 "metric": final if step % spec.eval_every == 0 else float("nan")}
                for step in range(1, spec.steps + 1, max(1, spec.steps // 20))]
        summary = {"final_metric": final, "best_metric": final, "final_train_loss": 2.0,
                   "diverged": False, "seconds": 1.0, "metric_name": task.metric,
                   "higher_is_better": task.higher_is_better}
        runs.append(Run(Path("/nonexistent") / spec.run_id, spec, summary, rows))
    return runs


def statuses(section: suite.Section, budget: str, value: Value = plausible) -> set[str]:
    runs = fake_runs(section, budget, value)
    return {v.status for v in suite.analyze(section, runs).verdicts}


@pytest.mark.parametrize("section", suite.SECTIONS, ids=lambda s: s.key)
def test_quick_decides_no_claim(section: suite.Section) -> None:
    assert statuses(section, "quick") == {verdicts.BUDGET_TOO_SHORT}


DECIDED_BY_DEFAULT = {"transformer", "adam2k", "untuned", "transformer-lr", "scaling",
                      "robustness", "warmup"}


@pytest.mark.parametrize("section", suite.SECTIONS, ids=lambda s: s.key)
def test_default_and_full_budgets_meet_the_needs_they_are_meant_to(
        section: suite.Section) -> None:
    assert verdicts.BUDGET_TOO_SHORT not in statuses(section, "full")
    default = statuses(section, "default")
    if section.key in DECIDED_BY_DEFAULT:
        assert verdicts.BUDGET_TOO_SHORT not in default
    else:  # image and LSTM: the default runs the small end of their budget scaling only
        assert default == {verdicts.BUDGET_TOO_SHORT}


def section(key: str) -> suite.Section:
    return next(s for s in suite.SECTIONS if s.key == key)


def verdict(result: suite.SectionResult, words: str) -> verdicts.Verdict:
    return next(v for v in result.verdicts if words in v.claim)


@pytest.mark.parametrize(("late_gap", "expected"), [
    (0.0, verdicts.REPRODUCED), (0.05, verdicts.NOT_REPRODUCED)])
def test_the_scaling_verdict_follows_the_gap_at_the_largest_budget(
        late_gap: float, expected: str) -> None:
    def accuracy(spec: RunSpec) -> float:
        shortfall = 0.1 if spec.steps < 6000 else late_gap
        return 0.9 + seed_noise(spec) - (shortfall if spec.optimizer == "radam" else 0.0)

    result = suite.analyze(section("scaling"), fake_runs(section("scaling"), "default",
                                                         accuracy))
    closes = verdict(result, "gap to Adam closes")
    assert closes.status == expected
    assert "750 steps -0.1" in closes.evidence  # the gap at every budget is reported
    assert verdict(result, "RAdam beats Adam").status == (
        verdicts.INCONCLUSIVE if late_gap == 0 else verdicts.NOT_REPRODUCED)


def adam2k_perplexity(rescued_at: int | None) -> Value:
    """Adam fails (30), warmup trains (14); adam-2k W trains from W = ``rescued_at`` on."""
    def value(spec: RunSpec) -> float:
        failed = spec.optimizer == "adam" or (
            spec.optimizer == "adam-2k" and (rescued_at is None or spec.warmup < rescued_at))
        return (30.0 if failed else 14.0) + seed_noise(spec)
    return value


@pytest.mark.parametrize(("rescued_at", "expected"), [
    (30, verdicts.REPRODUCED), (None, verdicts.NOT_REPRODUCED)])
def test_adam_2k_rescue_verdict_and_its_per_length_table(rescued_at: int | None,
                                                         expected: str) -> None:
    runs = fake_runs(section("adam2k"), "default", adam2k_perplexity(rescued_at))
    result = suite.analyze(section("adam2k"), runs)
    assert verdict(result, "rescues Adam").status == expected
    lengths = next(t for t in result.tables if t.headers[0] == "v-only iterations W")
    assert [row[0] for row in lengths.rows] == ["10", "30", "100"]
    assert [row[3] == verdicts.REPRODUCED for row in lengths.rows] == [
        rescued_at is not None and w >= rescued_at for w in (10, 30, 100)]


def test_the_discussion_reads_the_two_verdicts_together() -> None:
    adam2k = suite.analyze(section("adam2k"), fake_runs(section("adam2k"), "default",
                                                        adam2k_perplexity(None)))
    untuned = suite.analyze(section("untuned"), fake_runs(section("untuned"), "default"))
    assert verdict(untuned, "untuned linear").status == verdicts.REPRODUCED
    found = interpretation.variance_explanation([adam2k, untuned])
    assert found is not None
    text = " ".join(found.notes)
    assert interpretation.RESCUE[verdicts.NOT_REPRODUCED] in text
    assert interpretation.TOGETHER[(verdicts.NOT_REPRODUCED, verdicts.REPRODUCED)] in text
    assert interpretation.variance_explanation([untuned]) is None


def test_one_untuned_warmup_matching_is_enough_for_the_discussion() -> None:
    yes, no = verdicts.REPRODUCED, verdicts.NOT_REPRODUCED
    maybe, short = verdicts.INCONCLUSIVE, verdicts.BUDGET_TOO_SHORT
    assert interpretation.either([maybe, yes]) == yes
    assert interpretation.either([no, no]) == no
    assert interpretation.either([maybe, no]) == maybe
    assert interpretation.either([short, yes]) == short
