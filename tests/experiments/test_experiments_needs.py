"""Budget needs: the step shares against closed forms, and verdicts refused below the need."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rectified.experiments import needs, verdicts
from rectified.experiments.spec import RunSpec


def paper_r_t(t: int, beta2: float) -> float:
    """r_t written out from Liu et al. (Eq. 5-6), 0 where ρ_t <= 5 (the default threshold)."""
    rho_inf = 2 / (1 - beta2) - 1
    rho = rho_inf - 2 * t * beta2**t / (1 - beta2**t)
    if rho <= 5:
        return 0.0
    return math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))


def spec(optimizer: str, steps: int, beta2: float | None = None, **changes) -> RunSpec:
    options = {"betas": [0.9, beta2]} if beta2 is not None else {}
    return RunSpec("digits-mlp", optimizer, steps=steps, optimizer_options=options,
                   **changes).resolve()


@pytest.mark.parametrize(("steps", "beta2"), [(30, 0.999), (400, 0.98), (6000, 0.999)])
def test_mean_rectification_is_the_mean_of_the_papers_r_t(steps: int, beta2: float) -> None:
    expected = np.mean([paper_r_t(t, beta2) for t in range(1, steps + 1)])
    assert needs.mean_rectification(steps, beta2) == pytest.approx(expected, rel=1e-12)


def test_step_shares_of_each_recipe() -> None:
    assert np.array_equal(needs.step_shares(spec("adam", 5)), np.ones(5))
    assert np.array_equal(needs.step_shares(spec("sgd", 5)), np.ones(5))
    np.testing.assert_allclose(needs.step_shares(spec("adam-warmup", 6, warmup=4)),
                               [0.25, 0.5, 0.75, 1, 1, 1])
    np.testing.assert_allclose(needs.step_shares(spec("adam-untuned", 300, 0.99)),
                               [min(1.0, t * 0.01 / 2) for t in range(1, 301)])
    np.testing.assert_allclose(needs.step_shares(spec("adam-untuned-exp", 50, 0.98)),
                               [1 - math.exp(-0.02 * t) for t in range(1, 51)])
    np.testing.assert_allclose(needs.step_shares(spec("radam", 40, 0.98)),
                               [paper_r_t(t, 0.98) for t in range(1, 41)], rtol=1e-12)
    # Adam-2k's v-only iterations are extra: every real update is a full Adam step
    assert np.array_equal(needs.step_shares(spec("adam-2k", 7, warmup=100)), np.ones(7))


def test_a_short_run_misses_the_need_whatever_the_optimizer() -> None:
    need = needs.long_enough([spec("adam", 300), spec("adam-eps", 300)])
    assert not need.met
    assert "mean r_t 0.25 over 300 steps (β2 = 0.999)" in need.measured
    assert needs.long_enough([spec("adam", 6000), spec("radam", 6000)]).met
    assert needs.long_enough([spec("radam", 400, 0.98), spec("adam", 400, 0.98)]).met
    assert not needs.long_enough([spec("radam", 4000)]).met  # mean r_t 0.75


def test_a_warmup_that_fills_most_of_the_run_misses_the_need() -> None:
    need = needs.long_enough([spec("adam-warmup", 6000, warmup=4000), spec("radam", 6000)])
    assert not need.met and "lowest mean warmup share 0.67 (adam-warmup (warmup 4000))" in \
        need.measured
    assert not needs.long_enough([spec("adam-untuned", 400, 0.999)]).met
    assert needs.long_enough([spec("adam-untuned", 6000, 0.999)]).met


def test_adam_2k_needs_its_longest_phase_to_reach_two_over_one_minus_beta2() -> None:
    short = needs.second_moment_reach([spec("adam-2k", 10, 0.98, warmup=w) for w in (10, 30)])
    assert not short.met and "2 / (1 - β2) = 100" in short.measured
    assert needs.second_moment_reach([spec("adam-2k", 10, 0.98, warmup=100)]).met
    assert not needs.second_moment_reach([spec("adam-2k", 10, warmup=100)]).met  # needs 2000


def test_gated_refuses_a_verdict_below_the_need_and_keeps_it_above() -> None:
    decided = verdicts.better("a > b", "a", [0.90, 0.91, 0.92], "b", [0.80, 0.81, 0.82], True)
    assert decided.status == verdicts.REPRODUCED
    short = verdicts.Need(False, "the need", "mean r_t 0.06 over 30 steps")
    refused = verdicts.gated(decided, short)
    assert refused.status == verdicts.BUDGET_TOO_SHORT
    assert "mean r_t 0.06 over 30 steps" in refused.evidence and "the need" in refused.rule
    kept = verdicts.gated(decided, verdicts.Need(True, "the need", "mean r_t 0.9"))
    assert kept.status == verdicts.REPRODUCED and "mean r_t 0.9" in kept.evidence


def test_all_of_with_a_part_below_its_need_is_too_short() -> None:
    yes = verdicts.Verdict("x", verdicts.REPRODUCED, "", "")
    no = verdicts.Verdict("z", verdicts.NOT_REPRODUCED, "", "")
    short = verdicts.Verdict("s", verdicts.BUDGET_TOO_SHORT, "", "")
    assert verdicts.all_of("c", [yes, no, short], "").status == verdicts.BUDGET_TOO_SHORT
