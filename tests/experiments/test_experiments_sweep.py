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
