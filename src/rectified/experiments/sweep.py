"""Many independent runs in parallel processes.

Each worker process gets ``cpu_count // jobs`` torch threads, so ``jobs`` workers do not
oversubscribe the cores (on a small machine two 2-thread processes are several times slower
than two 1-thread ones). Runs already complete in their folders are skipped, interrupted ones
resume, and a run that fails is reported without stopping the others. :class:`Workers` keeps one
pool of processes for several calls of :func:`run_all`: starting a worker (importing torch,
reading a corpus) costs seconds, which adds up over the sections of ``rectified reproduce``.
"""

from __future__ import annotations

import multiprocessing
import os
import traceback
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from rectified.experiments import runner
from rectified.experiments.spec import RunSpec


@dataclass(frozen=True)
class Outcome:
    spec: RunSpec
    folder: Path
    summary: dict[str, Any] | None
    error: str = ""


def grid(base: RunSpec, optimizers: Sequence[str], lrs: Sequence[float | None],
         seeds: Sequence[int], warmups: Sequence[int | None] = (None,)) -> list[RunSpec]:
    """Every combination of optimizer, lr, warmup and seed on ``base``, resolved.

    Warmups apply only to recipes that use them; other recipes get one run per (lr, seed).
    """
    specs: dict[str, RunSpec] = {}
    for optimizer in optimizers:
        for lr in lrs:
            for warmup in warmups:
                for seed in seeds:
                    spec = replace(base, optimizer=optimizer, lr=lr, warmup=warmup,
                                   seed=seed).resolve()
                    specs.setdefault(spec.run_id, spec)
    return list(specs.values())


def threads_per_job(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // jobs)


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _run_one(spec: RunSpec, folder: Path) -> Outcome:
    try:
        return Outcome(spec, folder, runner.run(spec, folder))
    except Exception as error:  # one bad run must not sink a sweep
        detail = traceback.format_exception_only(type(error), error)[-1].strip()
        return Outcome(spec, folder, None, detail)


class Workers:
    """A pool of ``jobs`` run processes, started on first use and shared by the ``run_all``
    calls given it; use as a context manager."""

    def __init__(self, jobs: int) -> None:
        if jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {jobs}")
        self.jobs = jobs
        self._pool: ProcessPoolExecutor | None = None

    @property
    def pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.jobs, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=(threads_per_job(self.jobs),))
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_all(specs: Iterable[RunSpec], out_dir: str | Path, jobs: int = 1,
            progress: bool = True, description: str = "runs",
            workers: Workers | None = None) -> list[Outcome]:
    """Run ``specs`` into ``out_dir/<run_id>`` with ``jobs`` processes (those of ``workers``
    if given); outcomes in spec order."""
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    out = Path(out_dir)
    todo = [(spec, out / spec.run_id) for spec in specs]
    bar = runner.progress_bar(total=len(todo), desc=description, unit="run") if progress else None
    results: dict[int, Outcome] = {}
    pending = [i for i, (_, folder) in enumerate(todo) if not runner.is_complete(folder)]
    for index, (spec, folder) in enumerate(todo):
        if index not in pending:
            results[index] = _run_one(spec, folder)
            if bar is not None:
                bar.update(1)
    if jobs == 1 or len(pending) <= 1:
        for index in pending:
            results[index] = _run_one(*todo[index])
            if bar is not None:
                bar.update(1)
    else:
        own = workers is None
        pool_owner = workers if workers is not None else Workers(min(jobs, len(pending)))
        try:
            futures = {pool_owner.pool.submit(_run_one, *todo[i]): i for i in pending}
            waiting = set(futures)
            while waiting:
                done, waiting = wait(waiting, return_when=FIRST_COMPLETED)
                for future in done:
                    results[futures[future]] = future.result()
                    if bar is not None:
                        bar.update(1)
        finally:
            if own:
                pool_owner.close()
    if bar is not None:
        bar.close()
    return [results[i] for i in range(len(todo))]
