"""DistributedDataParallel (gloo, 2 and 4 processes) with every optimizer equals one process
training on the same global batch, and a NaN on one rank skips the step on every rank."""

from __future__ import annotations

import pytest

from tests.registry import CASES
from tests.reliability.distributed_worker import FORMAT_CASES, key, launch
from tests.reliability.support import (
    RULE_CASES,
    case_engine_id,
    case_engine_params,
    engines_of,
)

TOLERANCE = 1e-6  # float64 runs; the averaging of gradients is the only difference


@pytest.fixture(scope="module")
def two_ranks():
    return launch("ddp", 2)


@pytest.fixture(scope="module")
def four_ranks():
    return launch("ddp-wide", 4)


def _entry(results, name):
    entry = results[name]
    assert "error" not in entry, entry["error"]
    return entry


@pytest.mark.parametrize(("case", "engine"), case_engine_params(CASES), ids=case_engine_id)
def test_ddp_on_two_processes_equals_one_process_on_the_global_batch(two_ranks, case, engine):
    entry = _entry(two_ranks, key(case, engine))
    assert entry["error_vs_single"] <= TOLERANCE
    assert entry["ranks_agree"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_ddp_on_four_processes_equals_one_process_on_the_global_batch(four_ranks, case):
    entry = _entry(four_ranks, key(case, engines_of(case)[-1]))
    assert entry["error_vs_single"] <= TOLERANCE
    assert entry["ranks_agree"]


@pytest.mark.parametrize(("case", "engine"), case_engine_params(RULE_CASES), ids=case_engine_id)
def test_ddp_nan_on_one_rank_skips_the_step_on_every_rank(two_ranks, case, engine):
    """skip_nonfinite after the gradients are averaged: all ranks see the NaN and skip."""
    entry = _entry(two_ranks, key(case, engine, "nonfinite"))
    assert entry["error_vs_single"] <= TOLERANCE
    assert entry["ranks_agree"]
    assert entry["skips"] == [1, 1]


@pytest.mark.parametrize("state_format", ["8bit", "bfloat16"])
@pytest.mark.parametrize(("case", "engine"), case_engine_params(
    [c for c in RULE_CASES if c.name in FORMAT_CASES]), ids=case_engine_id)
def test_ddp_with_a_state_format_equals_one_process(two_ranks, case, engine, state_format):
    """Every rank draws the same rounding bits, so the replicas (parameters and stored state)
    stay identical; against one process on the global batch they differ only where the
    averaged gradients' last bits put a value on the other side of a code boundary."""
    entry = _entry(two_ranks, key(case, engine, state_format))
    assert entry["error_vs_single"] <= 1e-2
    assert entry["ranks_agree"]
