"""``rectified train TASK --optimizer NAME``: one run into its own folder, with a progress bar.

Under ``torchrun --nproc_per_node=N -m rectified train ...`` the run is data-parallel
(DistributedDataParallel, gloo on CPU, nccl on GPU) on the same global batch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rectified.experiments import data, distributed, recipes, runner
from rectified.experiments.commands.options import (
    add_task_arguments,
    optimizer_options,
    task_options,
)
from rectified.experiments.spec import RunSpec
from rectified.folders import writable_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_task_arguments(parser)
    parser.add_argument("--optimizer", default="radam",
                        help="recipe, one of: " + ", ".join(recipes.RECIPES))
    parser.add_argument("--lr", type=float, default=None,
                        help="learning rate (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs", help="parent folder of the run (default runs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    return RunSpec(
        task=args.task, optimizer=args.optimizer, lr=args.lr, seed=args.seed, steps=args.steps,
        batch_size=args.batch_size, eval_every=args.eval_every, warmup=args.warmup,
        task_options=task_options(args), optimizer_options=optimizer_options(args.option),
        monitor_steps=args.monitor_steps,
    ).resolve()


def announce(folder: Path, steps: int) -> None:
    """Say what rerunning a command does with the folder it left."""
    if runner.is_complete(folder):
        print(f"{folder} is complete: showing its result (delete the folder to run it again)",
              file=sys.stderr)
        return
    step = runner.checkpoint_step(folder)
    if step is not None:
        print(f"resuming {folder} from step {step} of {steps}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    data.check_source(spec.task, spec.task_options)
    folder = writable_folder(args.out) / spec.run_id
    context = distributed.init_from_environment()
    try:
        if context.is_main:
            announce(folder, spec.steps)
        summary = runner.run(spec, folder, progress=not args.no_progress, context=context)
    finally:
        distributed.shutdown(context)
    if context.is_main:
        print(f"{spec.task} {spec.optimizer} lr={spec.lr:g} seed={spec.seed}: "
              f"{summary['metric_name']} {summary['final_metric']:.4f} "
              f"(train loss {summary['final_train_loss']:.4f}, {summary['seconds']:.1f}s"
              f"{', diverged' if summary['diverged'] else ''}) -> {folder}")
    return 0
