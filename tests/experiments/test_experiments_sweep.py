"""``rectified sweep``: the grid, parallel processes, skipping complete runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from rectified.cli import main
from rectified.experiments import runner, sweep
from rectified.experiments.spec import RunSpec


def test_grid_applies_warmups_only_where_used() -> None:
    base = RunSpec("digits-mlp", "adam", steps=20)
    specs = sweep.grid(base, ["adam", "adam-warmup"], [1e-3, 1e-2], [0, 1], [2, 5])
    assert len([s for s in specs if s.optimizer == "adam"]) == 4
    assert sorted({s.warmup for s in specs if s.optimizer == "adam-warmup"}) == [2, 5]
    assert len(specs) == 4 + 8 and len({s.run_id for s in specs}) == len(specs)


def test_sweep_runs_in_parallel_and_skips_complete_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["sweep", "digits-mlp", "--optimizers", "adam,radam", "--lrs", "0.01",
            "--seeds", "0,1,2", "--steps", "10", "--width", "8", "--jobs", "2",
            "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    folders = sorted(tmp_path.iterdir())
    assert len(folders) == 6 and all(runner.is_complete(f) for f in folders)
    assert "adam " in table and "radam " in table and "    3  " in table
    stamps = [(f / "summary.json").stat().st_mtime_ns for f in folders]
    assert main(argv) == 0
    assert [(f / "summary.json").stat().st_mtime_ns for f in folders] == stamps
    assert capsys.readouterr().out == table  # the same numbers, read back from the folders


def test_one_pool_of_workers_serves_several_sweeps(tmp_path: Path) -> None:
    base = RunSpec("digits-mlp", "adam", steps=5, task_options={"width": 8})
    with sweep.Workers(2) as workers:
        first = sweep.run_all(sweep.grid(base, ["adam"], [1e-3], [0, 1]), tmp_path / "a",
                              jobs=2, progress=False, workers=workers)
        pool = workers.pool
        second = sweep.run_all(sweep.grid(base, ["radam"], [1e-3], [0, 1]), tmp_path / "b",
                               jobs=2, progress=False, workers=workers)
        assert workers.pool is pool
    assert workers._pool is None  # shut down on leaving the block
    assert all(o.summary is not None for o in first + second)
    # the same runs in this process give the same numbers
    again = sweep.run_all([o.spec for o in second], tmp_path / "serial", jobs=1, progress=False)
    assert [o.summary["final_metric"] for o in again] == \
        [o.summary["final_metric"] for o in second]
