"""``rectified <command>``: a thin layer that parses arguments and calls library functions.

Each command lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs. Bad arguments give a
one-line error and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "variance": ("rectified.variance.command", "the variance of the adaptive learning rate"),
    "train": ("rectified.experiments.commands.train", "train one task with one optimizer"),
    "sweep": ("rectified.experiments.commands.sweep", "many runs over optimizers, lrs, seeds"),
    "reproduce": ("rectified.experiments.commands.reproduce", "the paper's claims, then a report"),
    "report": ("rectified.experiments.commands.report", "rebuild a report from run folders"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported to add its arguments."""
    parser = argparse.ArgumentParser(
        prog="rectified", description="Adaptive optimizers built around RAdam, and their lab."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_module=module_name)
        if name == command:
            importlib.import_module(module_name).add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except ValueError as error:  # bad values found after parsing (e.g. a negative lr)
        print(f"rectified {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
