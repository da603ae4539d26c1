"""The ``rectified`` command itself: --version, --help without torch, --debug, one-line
argparse errors; and the package's lazy public names."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import rectified
from rectified.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    python = ".".join(map(str, sys.version_info[:3]))
    assert capsys.readouterr().out == (f"rectified {rectified.__version__} (torch "
                                       f"{metadata.version('torch')}, Python {python})\n")
    assert rectified.__version__ == metadata.version("rectified")


def test_help_and_version_do_not_import_torch() -> None:
    code = ("import sys\n"
            "from rectified.cli import main\n"
            "for argv in (['--help'], ['--version']):\n"
            "    try:\n"
            "        main(argv)\n"
            "    except SystemExit as exit_:\n"
            "        assert exit_.code == 0\n"
            "print(sorted(m for m in ('torch', 'numpy', 'matplotlib') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "train" in result.stdout and "--debug" in result.stdout
    assert result.stdout.strip().endswith("[]")


def test_import_is_lazy_and_the_public_names_are_the_same() -> None:
    code = ("import sys, rectified\n"
            "assert 'torch' not in sys.modules\n"
            "from rectified import RAdam, schedules\n"
            "import torch\n"
            "assert issubclass(RAdam, torch.optim.Optimizer)\n"
            "assert rectified.schedules is schedules\n"
            "from rectified import *\n"
            "names = dir()\n"
            "print(sorted(n for n in rectified.__all__ if n not in names))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_public_name_resolves() -> None:
    from rectified import optim, rules, wrappers

    assert rectified.RAdam is optim.RAdam and rectified.Ranger is wrappers.Ranger
    assert rectified.rho_t is rules.radam.rho_t
    assert set(rectified.__all__) <= set(dir(rectified))
    for name in rectified.__all__:
        assert getattr(rectified, name) is not None
    with pytest.raises(AttributeError, match="has no attribute 'Adamax'"):
        rectified.Adamax  # noqa: B018


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(where: str, tmp_path: Path) -> None:
    argv = ["train", "digits-mlp", "--lr", "-1", "--out", str(tmp_path)]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    with pytest.raises(ValueError, match=r"Invalid learning rate: -1\.0"):
        main(argv)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "rectified: error: the following arguments are required: COMMAND "
             "(see rectified --help)"),
        (["fly"], "rectified: error: argument COMMAND: invalid choice: 'fly'"),
        (["train"], "rectified train: error: the following arguments are required: task "
                    "(see rectified train --help)"),
        (["sweep", "digits-mlp", "--jobs", "two"],
         "rectified sweep: error: argument --jobs: invalid int value: 'two'"),
    ],
)
def test_parse_errors_are_one_line(argv: list[str], message: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(message)
