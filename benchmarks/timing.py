"""Interleaved timing, and the memory-bandwidth floor of an optimizer step.

Other processes share the machine, so the candidates of a table are timed in rounds: each round
runs every candidate once, in an order rotated from round to round, and a candidate's time is
the median over rounds. Load then hits all candidates alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from rectified.engines.fused import kernel

PROBE_SOURCE = Path(__file__).with_name("csrc") / "probe.cpp"

STEP_BYTES_PER_PARAM = 28  # read p, g, m, v and write p, m, v, 4 bytes each


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``run`` takes (the device's queue drained before and after)."""
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - start


def interleaved_medians(
    runs: Sequence[Callable[[], object]], rounds: int, device: torch.device
) -> list[float]:
    """Median seconds per call of each of ``runs``, timed in rotated rounds."""
    samples: list[list[float]] = [[] for _ in runs]
    for r in range(rounds):
        for k in range(len(runs)):
            index = (k + r) % len(runs)
            samples[index].append(timed(runs[index], device))
    return [statistics.median(s) for s in samples]


def floor_probe(numel: int, device: torch.device) -> Callable[[], object] | None:
    """One fused pass that reads p, g, m, v and writes p, m, v over ``numel`` float32 values.

    On the CPU it is a plain parallel loop compiled like the fused engine's kernel
    (``csrc/probe.cpp``); on CUDA a single ``torch._foreach_add_`` over (p, m, v) += g, which
    moves the same 28 bytes per element. None when neither is available.
    """
    p, g, m, v = (torch.rand(numel, device=device) for _ in range(4))
    if device.type == "cpu":
        try:
            torch.ops.load_library(str(kernel.build(source=PROBE_SOURCE)))
        except kernel.BuildError:
            return None
        return lambda: torch.ops.rectified_bench.probe_bandwidth_(p, g, m, v)
    return lambda: torch._foreach_add_([p, m, v], [g, g, g])
