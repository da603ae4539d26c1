"""``rectified <command>``: a thin layer that parses arguments and calls library functions.

Each command lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so ``rectified
--help`` and ``--version`` import neither torch nor the experiments.

A user's mistake is one line on stderr and an exit code, never a traceback (``--debug`` shows
it): 2 for a bad argument or input (an unknown task, a negative lr, an ``--out`` that is a file
or not writable, a corrupt data folder), 1 for what the installation or the machine lacks (an
optional package, a full disk) and for runs that failed, 130 for Ctrl-C, which says how to
resume.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "variance": ("rectified.variance.command", "the variance of the adaptive learning rate"),
    "train": ("rectified.experiments.commands.train", "train one task with one optimizer"),
    "sweep": ("rectified.experiments.commands.sweep", "many runs over optimizers, lrs, seeds"),
    "reproduce": ("rectified.experiments.commands.reproduce", "the paper's claims, then a report"),
    "report": ("rectified.experiments.commands.report",
               "rebuild a report from the run folders of train, sweep or reproduce"),
}
# commands whose runs resume from their folders when the same command runs again
RESUMABLE = ("train", "sweep", "reproduce")
# optional packages -> what to install; the experiments extra holds them all
EXTRAS = {"sklearn": "scikit-learn", "mlxtend": "mlxtend", "matplotlib": "matplotlib",
          "tqdm": "tqdm", "scipy": "scipy"}
EXTRA_HINT = "pip install 'rectified[experiments]'"
INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors on one line (usage is what ``--help`` is for)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Version(argparse.Action):
    """``--version``: this package, torch and Python, read without importing torch."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> NoReturn:
        from importlib import metadata

        from rectified import __version__

        try:
            torch_version = metadata.version("torch")
        except metadata.PackageNotFoundError:
            torch_version = "not installed"
        python = ".".join(map(str, sys.version_info[:3]))
        print(f"rectified {__version__} (torch {torch_version}, Python {python})")
        parser.exit(0)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported to add its arguments."""
    parser = OneLineParser(
        prog="rectified", description="Adaptive optimizers built around RAdam, and their lab."
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="print versions and exit")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error instead of its one-line message")
    common = OneLineParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text, parents=[common])
        sub.set_defaults(_module=module_name)
        if name == command:
            importlib.import_module(module_name).add_arguments(sub)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command(argv)
    prog = f"rectified {command}" if command in COMMANDS else "rectified"
    debug = "--debug" in argv  # also before parsing, which imports the command's module
    try:
        args = build_parser(command if command in COMMANDS else None).parse_args(argv)
        debug = bool(args.debug)
        return int(importlib.import_module(args._module).run(args) or 0)
    except KeyboardInterrupt as error:
        if debug:
            raise
        return _report(prog, INTERRUPTED, _interrupted(command, error))
    except ModuleNotFoundError as error:
        missing = (error.name or "").split(".")[0]
        if debug or missing not in EXTRAS:
            raise
        if EXTRA_HINT in str(error):  # the library said what needs it
            return _report(prog, 1, f"error: {error}")
        return _report(prog, 1, f"error: this needs {EXTRAS[missing]}, which is not installed "
                                f"(no module {missing!r}); {EXTRA_HINT}")
    except ValueError as error:  # bad values found after parsing (e.g. a negative lr)
        if debug:
            raise
        return _report(prog, 2, f"error: {error}")
    except OSError as error:  # the machine refused: a full disk, a folder made read-only
        if debug:
            raise
        where = f" {str(error.filename)!r}" if error.filename else ""
        return _report(prog, 1, f"error: {error.strerror or error}{where} (--debug shows the "
                                "traceback)")


def _interrupted(command: str | None, error: KeyboardInterrupt) -> str:
    """The line for Ctrl-C; a run's interruption (``runner.Interrupted``) names its folder and
    the step it resumes from."""
    folder, step = getattr(error, "folder", None), getattr(error, "step", None)
    if folder is not None and step is not None:
        start = f"from step {step}" if step else "from its start (no checkpoint yet)"
        return f"interrupted; run the same command again to resume {folder} {start}"
    if command in RESUMABLE:
        return ("interrupted; run the same command again to resume: finished runs are kept "
                "and the others continue from their last checkpoint")
    return "interrupted"


def _report(prog: str, code: int, message: str) -> int:
    if sys.stderr.isatty():
        print(file=sys.stderr)  # a progress bar may hold the line
    print(f"{prog}: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
