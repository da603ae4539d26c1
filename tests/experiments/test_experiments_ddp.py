"""``torchrun --nproc_per_node=2 -m rectified train``: two gloo processes equal one process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rectified.experiments import runner
from rectified.experiments.spec import RunSpec

ARGS = ["charlm-transformer", "--optimizer", "radam", "--steps", "8", "--batch-size", "8",
        "--eval-every", "4", "--width", "16", "--depth", "1", "--heads", "2", "--seq-len", "16",
        "--eval-windows", "4", "--train-bytes", "50000", "--no-progress"]


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun is not installed next to this Python")
def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    two = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", "-m", "rectified", "train", *ARGS,
         "--out", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=120)
    assert two.returncode == 0, two.stderr[-2000:]
    one = subprocess.run([sys.executable, "-m", "rectified", "train", *ARGS, "--out",
                          str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=120)
    assert one.returncode == 0, one.stderr[-2000:]

    (folder_two,) = (tmp_path / "two").iterdir()
    (folder_one,) = (tmp_path / "one").iterdir()
    assert folder_one.name == folder_two.name  # the same spec
    spec, summary_two, rows_two = runner.load_run(folder_two)
    _, summary_one, rows_one = runner.load_run(folder_one)
    assert summary_two["world_size"] == 2 and summary_one["world_size"] == 1
    assert spec == RunSpec.from_json((folder_one / "spec.json").read_text())
    assert len(rows_two) == len(rows_one) == 8
    for a, b in zip(rows_one, rows_two, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5, abs=1e-6)
    # the losses move, so equal trajectories are not equal by accident
    assert rows_one[0]["train_loss"] != rows_one[-1]["train_loss"]
    assert summary_two["final_metric"] == pytest.approx(summary_one["final_metric"], rel=1e-5)
