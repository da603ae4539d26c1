"""``rectified sweep TASK --optimizers a,b --lrs x,y --seeds 0,1,2 [--jobs N]``.

Every combination runs in its own folder under ``--out`` (complete ones are skipped), in
``--jobs`` parallel processes; then a table of the final metric, mean ± standard deviation
over seeds, per (optimizer, lr, warmup), and where the folders are (``rectified report OUT``
rebuilds a report from them). Rerunning the same command resumes: complete runs are kept and
interrupted ones continue from their last checkpoint.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from rectified.experiments import data, runner, sweep
from rectified.experiments.commands.options import (
    add_task_arguments,
    optimizer_options,
    task_options,
)
from rectified.experiments.spec import RunSpec
from rectified.folders import writable_folder


def _list(text: str, convert: type, flag: str) -> list:
    try:
        values = [convert(v) for v in text.split(",") if v.strip()]
    except ValueError:
        message = f"{flag} {text!r} is not a comma-separated list of {convert.__name__}"
        raise ValueError(message) from None
    if not values:
        raise ValueError(f"{flag} is empty")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_task_arguments(parser)
    parser.add_argument("--optimizers", default="sgd,adam,radam", help="comma-separated recipes")
    parser.add_argument("--lrs", default=None,
                        help="comma-separated learning rates (default: each recipe's)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--warmups", default=None,
                        help="comma-separated warmup lengths for adam-warmup / adam-2k")
    parser.add_argument("--jobs", type=int, default=1, help="parallel processes (default 1)")
    parser.add_argument("--out", default="runs", help="folder of the run folders (default runs)")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    optimizers = _list(args.optimizers, str, "--optimizers")
    lrs = _list(args.lrs, float, "--lrs") if args.lrs else [None]
    seeds = _list(args.seeds, int, "--seeds")
    warmups = _list(args.warmups, int, "--warmups") if args.warmups else [args.warmup]
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    base = RunSpec(task=args.task, optimizer=optimizers[0], steps=args.steps,
                   batch_size=args.batch_size, eval_every=args.eval_every,
                   task_options=task_options(args),
                   optimizer_options=optimizer_options(args.option),
                   monitor_steps=args.monitor_steps)
    specs = sweep.grid(base, optimizers, lrs, seeds, warmups)
    data.check_source(specs[0].task, specs[0].task_options)
    out = writable_folder(args.out)
    announce(out, [spec.run_id for spec in specs])
    outcomes = sweep.run_all(specs, args.out, jobs=args.jobs, progress=not args.no_progress,
                             description=f"sweep {args.task}")
    by_config: dict[tuple, list[float]] = defaultdict(list)
    metric_name = ""
    for outcome in outcomes:
        if outcome.summary is None:
            print(f"FAILED {outcome.spec.run_id}: {outcome.error}")
            continue
        metric_name = outcome.summary["metric_name"]
        key = (outcome.spec.optimizer, outcome.spec.lr, outcome.spec.warmup)
        by_config[key].append(outcome.summary["final_metric"])
    print(f"{'optimizer':<12} {'lr':>8} {'warmup':>6} {'seeds':>5}  {metric_name} (mean ± sd)")
    for (optimizer, lr, warmup), values in by_config.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{optimizer:<12} {lr:>8g} {warmup:>6} {len(values):>5}  "
              f"{statistics.fmean(values):.4f} ± {spread:.4f}")
    print(f"{len(outcomes)} run folders in {out}; rectified report {out} writes their report")
    return 1 if any(o.summary is None for o in outcomes) else 0


def announce(out: Path, run_ids: list[str]) -> None:
    """Say which runs an earlier sweep into ``out`` left complete or resumable."""
    complete = sum(runner.is_complete(out / run_id) for run_id in run_ids)
    resumed = {run_id: runner.checkpoint_step(out / run_id) for run_id in run_ids
               if not runner.is_complete(out / run_id)}
    resumed = {run_id: step for run_id, step in resumed.items() if step is not None}
    if complete:
        print(f"{complete} of {len(run_ids)} runs are already complete in {out}: kept",
              file=sys.stderr)
    for run_id, step in resumed.items():
        print(f"resuming {out / run_id} from step {step}", file=sys.stderr)
    print(f"sweep: {len(run_ids) - complete} runs to do, writing into {out}", file=sys.stderr)
