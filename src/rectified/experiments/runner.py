"""One run -> its own folder, resumable and skipped once complete ("experiments are data").

A run folder holds:

* ``spec.json``: the resolved :class:`~rectified.experiments.spec.RunSpec`;
* ``metrics.csv``: one row per step (``step, train_loss, lr, seconds``) and the task's metric
  in ``metric`` at every evaluation;
* ``checkpoint.pt``: model, optimizer and scheduler state at the last evaluation, from
  which an interrupted run resumes (the batches are functions of ``(seed, step)``, so a resumed
  run continues exactly as an uninterrupted one);
* ``monitor.npz``: a :class:`rectified.variance.VarianceMonitor` record (|gradient| and
  |update| histograms, statistics of the adaptive learning rate) of every one of the first
  ``monitor_steps`` updates, when asked for (Adam-family optimizers only). No checkpoint is
  written inside that window, so a resumed run never lacks part of it;
* ``summary.json``: written last; its presence marks the run complete.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from rectified.experiments import distributed, recipes, tasks
from rectified.experiments.spec import RunSpec

FIELDS = ("step", "train_loss", "metric", "lr", "seconds")
MONITOR_BINS = 56  # quarter-decade bins over log10 |x| in [-12, 2]
CHANCE = {"test accuracy": 0.1, "validation perplexity": 256.0}  # where a diverged run lands


def progress_bar(**options: Any) -> Any:
    """A tqdm bar (loss in its postfix, speed in steps/s), or None without tqdm installed."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(dynamic_ncols=True, **options)


def is_complete(folder: str | Path) -> bool:
    return (Path(folder) / "summary.json").is_file()


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run: ``folder`` resumes from ``step`` (its last checkpoint; 0 = none)."""

    def __init__(self, folder: Path, step: int) -> None:
        super().__init__(f"{folder} resumes from step {step}")
        self.folder, self.step = folder, step


def checkpoint_step(folder: str | Path) -> int | None:
    """The step an unfinished run folder resumes from, or None without a checkpoint."""
    checkpoint_file = Path(folder) / "checkpoint.pt"
    if not checkpoint_file.is_file():
        return None
    # mmap: the step is read without loading the saved tensors
    return int(torch.load(checkpoint_file, map_location="cpu", mmap=True,
                          weights_only=False)["step"])


def load_run(folder: str | Path) -> tuple[RunSpec, dict[str, Any], list[dict[str, float]]]:
    """(spec, summary, metric rows) of a complete run folder."""
    folder = Path(folder)
    spec = RunSpec.from_json((folder / "spec.json").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    return spec, summary, read_metrics(folder / "metrics.csv")


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    with open(path, newline="") as handle:
        return [{k: float(v) if v != "" else math.nan for k, v in row.items()}
                for row in csv.DictReader(handle)]


def run(spec: RunSpec, folder: str | Path, *, progress: bool = False,
        context: distributed.Context | None = None, stop_after: int | None = None
        ) -> dict[str, Any]:
    """Train ``spec`` into ``folder`` and return its summary.

    A complete folder with the same spec is returned as is; a folder holding another spec
    raises ``ValueError``. ``stop_after`` ends the process's work after that many steps without
    completing the run (used to test resume).
    """
    spec = spec.resolve()
    folder = Path(folder)
    context = context or distributed.Context(device=distributed.default_device())
    spec_file = folder / "spec.json"
    if spec_file.is_file():
        if RunSpec.from_json(spec_file.read_text()) != spec:
            raise ValueError(f"{folder} holds a different run; choose another folder")
        if is_complete(folder):
            return json.loads((folder / "summary.json").read_text())
    if spec.resolved.batch_size % context.world_size:
        raise ValueError(f"batch size {spec.batch_size} does not divide among "
                         f"{context.world_size} processes")
    if context.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(spec_file, spec.to_json() + "\n")
    try:
        return _train(spec, folder, context, progress, stop_after)
    except KeyboardInterrupt:
        raise Interrupted(folder, checkpoint_step(folder) or 0) from None


def _train(spec: RunSpec, folder: Path, context: distributed.Context, progress: bool,
           stop_after: int | None) -> dict[str, Any]:
    task = tasks.get_task(spec.task)
    torch.manual_seed(spec.seed)
    problem = task.build(spec.task_options, context.device)
    model = distributed.wrap(problem.model, context)
    resolved = spec.resolved
    prepared = recipes.build(spec.optimizer, problem.model.parameters(), resolved.lr,
                             resolved.warmup, spec.optimizer_options)
    optimizer, scheduler = prepared.optimizer, prepared.scheduler
    checkpoint_file = folder / "checkpoint.pt"
    start_step, elapsed = 0, 0.0
    if not checkpoint_file.is_file() and prepared.second_moment_steps:
        began_extra = time.perf_counter()
        prepared.update_second_moment_only(
            lambda index: _backward(problem, model, spec, spec.steps + index, context))
        elapsed = time.perf_counter() - began_extra  # counted in the run's seconds
    monitor = None
    if spec.monitor_steps and not (folder / "monitor.npz").is_file():
        from rectified.variance import VarianceMonitor

        monitor = VarianceMonitor(optimizer, every=1, bins=MONITOR_BINS,
                                  names=problem.model.named_parameters())

    if checkpoint_file.is_file():
        saved = torch.load(checkpoint_file, map_location=context.device, weights_only=False)
        problem.model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        start_step, elapsed = saved["step"], saved["seconds"]
    rows = _rows_until(folder / "metrics.csv", start_step) if start_step else []

    bar = None
    if progress and context.is_main:
        bar = progress_bar(total=spec.steps, initial=start_step,
                           desc=f"{spec.task} {spec.optimizer}", unit="step")
    diverged = False
    began = time.perf_counter() - elapsed
    step = start_step
    metric = math.nan
    while step < spec.steps:
        inputs, targets = problem.batch(step, spec.seed, resolved.batch_size)
        model.train()
        loss = problem.loss(model, distributed.shard(inputs, context),
                            distributed.shard(targets, context))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        step += 1
        if monitor is not None and step == spec.monitor_steps:
            monitor.detach()
            if context.is_main:
                monitor.save(folder / "monitor.npz")
            monitor = None
        train_loss = float(distributed.mean_across(loss.detach(), context))
        row: dict[str, Any] = {"step": step, "train_loss": train_loss, "metric": "",
                               "lr": float(lr), "seconds": time.perf_counter() - began}
        diverged = not math.isfinite(train_loss)
        if step % resolved.eval_every == 0 or step == spec.steps or diverged:
            model.eval()
            metric = problem.evaluate(problem.model)
            row["metric"] = metric
        rows.append(row)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.4f}", refresh=False)
        if diverged:
            break
        if row["metric"] != "" and step < spec.steps and monitor is None and context.is_main:
            _save_checkpoint(checkpoint_file, problem.model, optimizer, scheduler, step,
                             row["seconds"])
            _write_rows(folder / "metrics.csv", rows)
        if stop_after is not None and step - start_step >= stop_after and step < spec.steps:
            if bar is not None:
                bar.close()
            return {"complete": False, "step": step}
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - began
    final = metric if math.isfinite(metric) else CHANCE[task.metric]
    evaluated = [r["metric"] for r in rows if r["metric"] != "" and math.isfinite(r["metric"])]
    best = (max if task.higher_is_better else min)(evaluated) if evaluated else final
    summary = {
        "run_id": spec.run_id,
        "task": spec.task,
        "optimizer": spec.optimizer,
        "metric_name": task.metric,
        "higher_is_better": task.higher_is_better,
        "final_metric": final,
        "best_metric": best,
        "final_train_loss": _mean_tail([r["train_loss"] for r in rows]),
        "diverged": diverged,
        "steps_done": step,
        "seconds": seconds,
        "steps_per_second": (step - start_step) / max(seconds - elapsed, 1e-9),
        "world_size": context.world_size,
        "device": str(context.device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "spec": asdict(spec),
    }
    if context.is_main:
        _write_rows(folder / "metrics.csv", rows)
        if monitor is not None:  # the run ended inside the monitored window
            monitor.save(folder / "monitor.npz")
        _atomic_write(folder / "summary.json", json.dumps(summary, indent=2) + "\n")
        checkpoint_file.unlink(missing_ok=True)
    distributed.barrier(context)
    return summary


def _backward(problem: tasks.Problem, model: torch.nn.Module, spec: RunSpec, index: int,
              context: distributed.Context) -> None:
    """Gradients of the training loss on batch ``index`` (Adam-2k's extra iterations read the
    batches after the run's last step, which training never reads)."""
    inputs, targets = problem.batch(index, spec.seed, spec.resolved.batch_size)
    model.train()
    problem.loss(model, distributed.shard(inputs, context),
                 distributed.shard(targets, context)).backward()


def _mean_tail(values: list[float], fraction: float = 0.1) -> float:
    tail = values[-max(1, int(len(values) * fraction)):]
    return sum(tail) / len(tail) if tail else math.nan


def _rows_until(path: Path, step: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        rows = [dict(r) for r in csv.DictReader(handle)]
    kept = []
    for row in rows:
        if int(row["step"]) > step:
            break
        kept.append({k: (float(v) if v != "" else "") for k, v in row.items()})
        kept[-1]["step"] = int(row["step"])
    return kept


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    temporary = path.with_suffix(".tmp")
    with open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, path)


def _save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: Any, step: int, seconds: float) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "step": step,
        "seconds": seconds,
    }
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def _atomic_write(path: Path, text: str) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
