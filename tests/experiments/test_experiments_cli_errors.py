"""Bad arguments give a one-line error naming the bad value and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from rectified.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "imagenet-resnet"], "unknown task 'imagenet-resnet'"),
        (["train", "digits-mlp", "--optimizer", "adamax"], "unknown optimizer 'adamax'"),
        (["train", "digits-mlp", "--lr", "-0.1"], "Invalid learning rate: -0.1"),
        (["train", "digits-mlp", "--lr", "0"], "Invalid learning rate: 0.0"),
        (["train", "digits-mlp", "--lr", "nan"], "Invalid learning rate: nan"),
        (["train", "digits-mlp", "--steps", "0"], "steps must be >= 1, got 0"),
        (["train", "digits-mlp", "--depth", "2"], "task digits-mlp has no option 'depth'"),
        (["train", "charlm-lstm", "--width", "-4"], "width must be a positive integer, got -4"),
        (["train", "digits-mlp", "--option", "nesterov=true"], "optimizer radam"),
        (["train", "digits-mlp", "--optimizer", "sgd", "--monitor-steps", "5"],
         "monitor_steps needs an Adam-family optimizer, not 'sgd'"),
        (["sweep", "digits-mlp", "--optimizers", "adam,bogus"], "unknown optimizer 'bogus'"),
        (["sweep", "digits-mlp", "--lrs", "1e-3,fast"], "--lrs '1e-3,fast'"),
        (["sweep", "digits-mlp", "--jobs", "0"], "--jobs must be >= 1, got 0"),
        (["reproduce", "--sections", "nmt"], "unknown section 'nmt'"),
    ],
)
def test_bad_argument(argv: list[str], message: str, tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--out", str(tmp_path)] if argv[0] != "report" else argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert message in err
    assert not any(tmp_path.iterdir())  # nothing ran
