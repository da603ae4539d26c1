"""Verdict rules: which way each one goes, and when it refuses to decide."""

from __future__ import annotations

from rectified.experiments import verdicts
from rectified.experiments.verdicts import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED


def test_better_follows_the_pooled_spread() -> None:
    low_noise_a, low_noise_b = [0.90, 0.91, 0.92], [0.80, 0.81, 0.82]
    assert verdicts.better("a > b", "a", low_noise_a, "b", low_noise_b, True).status == REPRODUCED
    assert verdicts.better("b > a", "b", low_noise_b, "a", low_noise_a, True).status == \
        NOT_REPRODUCED
    noisy = [0.70, 0.90, 1.10]
    assert verdicts.better("a > b", "a", noisy, "b", low_noise_b, True).status == INCONCLUSIVE


def test_lower_is_better_for_perplexity() -> None:
    result = verdicts.better("a < b", "a", [10.0, 10.1, 10.2], "b", [12.0, 12.1, 12.2], False)
    assert result.status == REPRODUCED
    assert "pooled spread 0.1" in result.evidence


def test_fewer_than_three_seeds_is_inconclusive() -> None:
    result = verdicts.better("a > b", "a", [1.0, 1.0], "b", [0.0, 0.0], True)
    assert result.status == INCONCLUSIVE and "fewer than 3 seeds" in result.evidence


def test_matches_tolerates_one_spread_and_rejects_two() -> None:
    base = [1.0, 1.1, 1.2]  # sd 0.1
    assert verdicts.matches("m", "a", [0.95, 1.05, 1.15], "b", base, True).status == REPRODUCED
    assert verdicts.matches("m", "a", [0.85, 0.95, 1.05], "b", base, True).status == INCONCLUSIVE
    assert verdicts.matches("m", "a", [0.6, 0.7, 0.8], "b", base, True).status == NOT_REPRODUCED
    assert verdicts.matches("m", "a", [2.0, 2.1, 2.2], "b", base, True).status == REPRODUCED


def test_all_of_needs_every_part() -> None:
    yes = verdicts.Verdict("x", REPRODUCED, "", "")
    maybe = verdicts.Verdict("y", INCONCLUSIVE, "", "")
    no = verdicts.Verdict("z", NOT_REPRODUCED, "", "")
    assert verdicts.all_of("c", [yes, yes], "").status == REPRODUCED
    assert verdicts.all_of("c", [yes, maybe], "").status == INCONCLUSIVE
    assert verdicts.all_of("c", [yes, maybe, no], "").status == NOT_REPRODUCED
    assert verdicts.all_of("c", [], "").status == INCONCLUSIVE
