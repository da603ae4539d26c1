"""Arguments shared by ``train`` and ``sweep``: the task's size and the run's budget."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rectified.experiments import tasks

TASK_FLAGS = ("width", "depth", "heads", "seq_len", "eval_windows", "train_bytes")


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", help="one of: " + ", ".join(tasks.TASKS))
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps (default 300)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="global batch size (default: the task's)")
    parser.add_argument("--eval-every", type=int, default=None,
                        help="evaluate every N steps (default: steps // 10)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="warmup steps of adam-warmup / extra v-only iterations of adam-2k "
                             "(default: steps // 10)")
    parser.add_argument("--monitor-steps", type=int, default=0,
                        help="record |gradient| histograms over the first N steps")
    for flag in TASK_FLAGS:
        parser.add_argument(f"--{flag.replace('_', '-')}", type=int, default=None,
                            help=f"task option {flag} (default: the task's)")
    parser.add_argument("--data", default=None, help="CIFAR-10 python folder (cifar10-cnn)")
    parser.add_argument("--text", default=None, help="a text file for the charlm tasks")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="optimizer keyword override, VALUE read as JSON (repeatable)")


def task_options(args: argparse.Namespace) -> dict[str, Any]:
    """The task options given on the command line (checked against the task when resolved)."""
    options: dict[str, Any] = {}
    for flag in TASK_FLAGS:
        if getattr(args, flag) is not None:
            options[flag] = getattr(args, flag)
    for flag in ("data", "text"):
        if getattr(args, flag) is not None:
            options[flag] = getattr(args, flag)
    return options


def optimizer_options(pairs: list[str]) -> dict[str, Any]:
    """``["eps=1e-6", "betas=[0.9,0.99]"]`` -> ``{"eps": 1e-6, "betas": [0.9, 0.99]}``."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option {pair!r} is not KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
        if key == "betas" and isinstance(options[key], list):
            options[key] = tuple(options[key])
    return options

