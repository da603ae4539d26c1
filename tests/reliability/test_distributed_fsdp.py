"""FSDP2 (``fully_shard``, DTensor parameters; gloo, 2 processes): every optimizer and engine
steps sharded parameters like the unsharded model, its state round-trips through
torch.distributed.checkpoint's get/set_optimizer_state_dict (whose lr = 0 initialisation step
moves nothing, Lookahead's counter included), and a NaN in one rank's shard skips the step on
every rank."""

from __future__ import annotations

import pytest

from tests.registry import CASES
from tests.reliability.distributed_worker import (
    FSDP_EMPTY_SHARD_CASE,
    FSDP_FORMAT_CASES,
    FSDP_FORMAT_DEEP_CASES,
    FSDP_FULL_STATE_CASES,
    PLACEMENTS,
    key,
    launch,
)
from tests.reliability.support import (
    RULE_CASES,
    case_engine_id,
    case_engine_params,
    engines_of,
)

TOLERANCE = 1e-5

def _params(pairs):
    return [pytest.param(case, engine, id=f"{case_engine_id(case)}-{engine}")
            for case, engine in pairs]


@pytest.fixture(scope="module")
def fsdp_results():
    return launch("fsdp", 2)


def _entry(results, name):
    entry = results[name]
    assert "error" not in entry, entry["error"]
    return entry


def _assert_round_trip(entry) -> None:
    assert not entry["init_moved_params"], "the lr = 0 initialisation step moved parameters"
    assert entry["init_counters"] == [0, 0], "the lr = 0 step advanced Lookahead's counter"
    assert entry["loaded_counters"] == entry["saved_counters"]
    assert entry["resumed_equal"]


@pytest.mark.parametrize(("case", "engine"), _params(case_engine_params(CASES)))
def test_fsdp2_steps_dtensor_params_like_the_unsharded_model(fsdp_results, case, engine):
    assert _entry(fsdp_results, key(case, engine))["error_vs_unsharded"] <= TOLERANCE


@pytest.mark.parametrize(("case", "engine"), _params(case_engine_params(CASES)))
def test_fsdp2_optimizer_state_round_trips_through_distributed_checkpoint(
    fsdp_results, case, engine
):
    """Sharded get_optimizer_state_dict, then set_optimizer_state_dict into a fresh model and
    optimizer; both runs continue 6 steps and stay equal bit for bit."""
    _assert_round_trip(_entry(fsdp_results, key(case, engine)))


@pytest.mark.parametrize(
    ("case", "engine"),
    _params((case, "foreach") for case in CASES if case.name in FSDP_FULL_STATE_CASES),
)
def test_fsdp2_full_state_dict_broadcast_from_rank0_round_trips(fsdp_results, case, engine):
    entry = _entry(fsdp_results, key(case, engine, "full-state-dict"))
    assert entry["error_vs_unsharded"] <= TOLERANCE
    _assert_round_trip(entry)


@pytest.mark.parametrize(("case", "engine"),
                         _params((case, "reference") for case in RULE_CASES))
def test_fsdp2_nan_in_one_rank_shard_skips_the_step_on_every_rank(fsdp_results, case, engine):
    entry = _entry(fsdp_results, key(case, engine, "nonfinite"))
    assert entry["error_vs_unsharded"] <= TOLERANCE
    assert entry["skips"] == [1, 1]


def test_fsdp2_skip_nonfinite_with_an_empty_local_shard(fsdp_results):
    case = next(case for case in CASES if case.name == FSDP_EMPTY_SHARD_CASE)
    entry = _entry(fsdp_results, key(case, "foreach", "nonfinite-empty-shard"))
    assert entry["error_vs_unsharded"] <= TOLERANCE
    assert entry["skips"] == [1, 1]



def _format_params():
    pairs = []
    for case in RULE_CASES:
        if case.name in FSDP_FORMAT_CASES:
            for engine in engines_of(case):
                pairs += [pytest.param(case, engine, state_format,
                                       id=f"{case.name}-{engine}-{state_format}")
                          for state_format in ("8bit", "bfloat16")]
            pairs += [pytest.param(case, "fused", check, id=f"{case.name}-fused-{check}")
                      for check in ("8bit-full-state-dict", "8bit-float32", "bfloat16-float32",
                                    "8bit-bfloat16-stochastic")]
    return pairs


@pytest.mark.parametrize(("case", "engine", "check"), _format_params())
def test_fsdp2_state_formats_block_each_shard_and_round_trip(fsdp_results, case, engine, check):
    """8-bit and bfloat16 state of DTensor parameters: DTensor codes laid out as the
    parameter, scales sharded with a row per rank (its blocks, then zeros); training within a
    code step of the unsharded run in the same format; the distributed checkpoint (sharded, or
    full and broadcast from rank 0) round-trips, and both runs continue bit for bit. float64
    parameters take the general path; float32 ones the fused engine's one-pass kernel."""
    entry = _entry(fsdp_results, key(case, engine, check))
    assert entry["format_problems"] == []
    # bfloat16 state is elementwise, and a shard's element draws the random bits of its place
    # in the whole tensor: the unsharded run's bits. 8-bit blocks end where shards end.
    bound = {"bfloat16": 1e-9, "bfloat16-float32": 1e-6}.get(check, 1e-2)
    assert entry["error_vs_unsharded"] <= bound
    _assert_round_trip(entry)


@pytest.mark.parametrize("case", [c for c in RULE_CASES if c.name in FSDP_FORMAT_DEEP_CASES],
                         ids=lambda case: case.name)
def test_fsdp2_formatted_dtensor_with_a_gradient_placed_otherwise_raises_before_moving(
        fsdp_results, case):
    entry = _entry(fsdp_results, key(case, "fused", "misplaced-gradient"))
    assert "is a DTensor stored as state_format='8bit'" in entry["message"]
    assert not entry["moved"]
    assert entry["state"] == []


@pytest.mark.parametrize(("case", "engine"), _params(
    (case, engine) for case in RULE_CASES if case.name in FSDP_FORMAT_DEEP_CASES
    for engine in engines_of(case)))
def test_fsdp2_state_converts_shard_by_shard_when_a_group_changes_its_format(
        fsdp_results, case, engine):
    """float32 -> 8-bit -> bfloat16 -> float32 between steps of a sharded run."""
    entry = _entry(fsdp_results, key(case, engine, "switching-formats"))
    assert entry["format_problems"] == []
    assert entry["error_vs_unsharded"] <= 1e-2


@pytest.mark.parametrize("name", list(PLACEMENTS))
@pytest.mark.parametrize(("case", "engine"), _params(
    (case, engine) for case in RULE_CASES if case.name in FSDP_FORMAT_DEEP_CASES
    for engine in engines_of(case)))
def test_8bit_state_of_dtensors_placed_otherwise_than_fsdp2(fsdp_results, case, engine, name):
    """Shard(1), (Replicate, Shard(0)), (Shard(0), Shard(1)), Replicate: blocked within each
    local shard, trained within a code step of a plain tensor, resumed bit for bit."""
    entry = _entry(fsdp_results, key(case, engine, f"placed-{name}"))
    assert entry["format_problems"] == []
    assert entry["error_vs_plain"] <= 1e-2
    assert entry["resumed_equal"]


@pytest.mark.parametrize("case", [c for c in RULE_CASES if c.name in FSDP_FORMAT_DEEP_CASES],
                         ids=lambda case: case.name)
def test_8bit_state_from_a_checkpoint_of_another_sharding_is_refused(fsdp_results, case):
    """Shard(0) -> Shard(1) through torch.distributed.checkpoint: the scales keep their shape
    but name other shards; refused before the parameters move."""
    entry = _entry(fsdp_results, key(case, "fused", "resharded-checkpoint"))
    assert "another sharding" in entry["message"]
    assert not entry["moved"]
