"""Bit-exact resume in a new process, for every optimizer, engine, wrapper and scheduler.

Each scenario trains 7 steps, writes model, optimizer, scheduler (and GradScaler) state with
``torch.save``; one other Python process loads every checkpoint with
``torch.load(weights_only=True)`` into fresh objects and trains 6 more steps. The parameters
must equal those of 13 uninterrupted steps bit for bit on the same engine, and within float
tolerance when the resumed run switches engine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rectified.engines import ENGINES
from tests.registry import CASES
from tests.reliability.resume_scenarios import SCENARIOS, save_first_part, uninterrupted
from tests.reliability.support import (
    ENGINE_FLAGS,
    ENGINE_OPTIONS,
    RULE_CASES,
    assert_equal_tensors,
    engines_of,
    max_relative_error,
)

ROOT = Path(__file__).resolve().parents[2]
SAME_ENGINE = [s for s in SCENARIOS.values() if s.save_engine == s.load_engine]
CROSS_ENGINE = [s for s in SCENARIOS.values() if s.save_engine != s.load_engine]
CROSS_ENGINE_RTOL = 1e-10  # float64; engines may round differently


@pytest.fixture(scope="module")
def resumed(tmp_path_factory) -> dict[str, dict]:
    """Every scenario's outcome after resuming in one separate process."""
    folder = tmp_path_factory.mktemp("checkpoints")
    for scenario in SCENARIOS.values():
        save_first_part(scenario, folder)
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    command = [sys.executable, "-m", "tests.reliability.resume_child", str(folder),
               str(torch.get_num_threads()), *SCENARIOS]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return torch.load(folder / "resumed.pt", weights_only=True)


def test_every_engine_can_be_selected():
    """A new engine of the library needs its constructor keywords and flags here."""
    assert set(ENGINES) <= ENGINE_OPTIONS.keys() & ENGINE_FLAGS.keys()


def test_every_optimizer_and_engine_has_a_scenario():
    names = {s.name for s in SAME_ENGINE}
    assert {f"{case.name}@{engine}" for case in CASES for engine in engines_of(case)} <= names
    pairs = {(s.case.name, s.save_engine, s.load_engine) for s in CROSS_ENGINE}
    for case in RULE_CASES:
        engines = engines_of(case)
        assert len(engines) >= 2
        assert {(case.name, a, b) for a in engines for b in engines if a != b} <= pairs


@pytest.mark.parametrize("scenario", SAME_ENGINE, ids=lambda s: s.name)
def test_resume_in_a_new_process_is_bit_exact(scenario, resumed):
    """Parameters bit for bit; learning rates and GradScaler state equal."""
    outcome, expected = resumed[scenario.name], uninterrupted(scenario)
    assert_equal_tensors(outcome["params"], expected["params"], what="parameter")
    assert outcome["lrs"] == expected["lrs"]
    assert outcome["scaler"] == expected["scaler"]


@pytest.mark.parametrize("scenario", CROSS_ENGINE, ids=lambda s: s.name)
def test_resume_on_another_engine_is_within_float_tolerance(scenario, resumed):
    outcome, expected = resumed[scenario.name], uninterrupted(scenario)
    assert max_relative_error(outcome["params"], expected["params"]) <= CROSS_ENGINE_RTOL
    assert outcome["lrs"] == expected["lrs"]
