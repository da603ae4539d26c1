"""Run folders: spec round trip, resume of an interrupted run, skipping a complete one."""

from __future__ import annotations

from pathlib import Path

import pytest

from rectified.experiments import runner
from rectified.experiments.spec import RunSpec

TINY_LM = {"width": 16, "depth": 1, "heads": 2, "seq_len": 16, "eval_windows": 4,
           "train_bytes": 50_000}


def tiny(optimizer: str = "radam", **changes) -> RunSpec:
    fields = dict(task="charlm-transformer", optimizer=optimizer, steps=12, batch_size=4,
                  eval_every=4, task_options=TINY_LM)
    fields.update(changes)
    return RunSpec(**fields).resolve()


def test_spec_round_trips_through_json() -> None:
    spec = tiny("adam-warmup", warmup=3, optimizer_options={"betas": (0.9, 0.98)})
    assert RunSpec.from_json(spec.to_json()) == spec
    assert spec.warmup == 3 and spec.lr == 1e-3 and spec.task_options["depth"] == 1
    assert spec.run_id != tiny("adam-warmup", warmup=4).run_id


def test_unknown_spec_field_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown field 'colour'"):
        RunSpec.from_dict({"task": "digits-mlp", "optimizer": "adam", "colour": 1})


def test_interrupted_run_resumes_to_the_same_result(tmp_path: Path) -> None:
    spec = tiny("adam-2k", warmup=2)
    straight = runner.run(spec, tmp_path / "straight")
    partial = runner.run(spec, tmp_path / "resumed", stop_after=6)
    assert partial == {"complete": False, "step": 6}
    assert (tmp_path / "resumed" / "checkpoint.pt").is_file()
    assert not runner.is_complete(tmp_path / "resumed")
    resumed = runner.run(spec, tmp_path / "resumed")
    assert resumed["final_metric"] == straight["final_metric"]
    rows_a = runner.read_metrics(tmp_path / "straight" / "metrics.csv")
    rows_b = runner.read_metrics(tmp_path / "resumed" / "metrics.csv")
    assert [r["step"] for r in rows_b] == list(range(1, 13))
    assert [r["train_loss"] for r in rows_a] == [r["train_loss"] for r in rows_b]
    assert not (tmp_path / "resumed" / "checkpoint.pt").exists()


def test_complete_run_is_skipped_and_other_specs_are_refused(tmp_path: Path) -> None:
    spec = tiny(steps=4)
    first = runner.run(spec, tmp_path / "run")
    stamp = (tmp_path / "run" / "metrics.csv").stat().st_mtime_ns
    assert runner.run(spec, tmp_path / "run") == first
    assert (tmp_path / "run" / "metrics.csv").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="holds a different run"):
        runner.run(tiny(steps=5), tmp_path / "run")


def test_monitor_records_the_first_updates(tmp_path: Path) -> None:
    from rectified.variance import VarianceMonitor

    runner.run(tiny("adam", monitor_steps=5), tmp_path / "run")
    steps, edges, counts = VarianceMonitor.load(tmp_path / "run" / "monitor.npz"
                                                ).gradient_histogram()
    assert list(steps) == [1, 2, 3, 4, 5]
    assert counts.shape == (5, len(edges) - 1) and (counts.sum(axis=1) > 0).all()


def test_adam_2k_iterations_are_extra_and_leave_the_parameters_alone(tmp_path: Path) -> None:
    plain = tiny("adam", steps=6, eval_every=6)
    primed = tiny("adam-2k", steps=6, eval_every=6, warmup=5)
    runner.run(plain, tmp_path / "plain")
    summary = runner.run(primed, tmp_path / "primed")
    rows_plain = runner.read_metrics(tmp_path / "plain" / "metrics.csv")
    rows_primed = runner.read_metrics(tmp_path / "primed" / "metrics.csv")
    assert summary["steps_done"] == 6 and [r["step"] for r in rows_primed] == list(range(1, 7))
    # the first real batch meets the initial parameters in both runs; after it, v differs
    assert rows_primed[0]["train_loss"] == rows_plain[0]["train_loss"]
    assert rows_primed[1]["train_loss"] != rows_plain[1]["train_loss"]
