"""``rectified train TASK --optimizer NAME``: one run into its own folder, with a progress bar.

Under ``torchrun --nproc_per_node=N -m rectified train ...`` the run is data-parallel
(DistributedDataParallel, gloo on CPU, nccl on GPU) on the same global batch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rectified.experiments import distributed, recipes, runner
from rectified.experiments.commands.options import (
    add_task_arguments,
    optimizer_options,
    task_options,
)
from rectified.experiments.spec import RunSpec


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


def run(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    context = distributed.init_from_environment()
    try:
        folder = Path(args.out) / spec.run_id
        summary = runner.run(spec, folder, progress=not args.no_progress, context=context)
    finally:
        distributed.shutdown(context)
    if context.is_main:
        print(f"{spec.task} {spec.optimizer} lr={spec.lr:g} seed={spec.seed}: "
              f"{summary['metric_name']} {summary['final_metric']:.4f} "
              f"(train loss {summary['final_train_loss']:.4f}, {summary['seconds']:.1f}s"
              f"{', diverged' if summary['diverged'] else ''}) -> {folder}")
    return 0
