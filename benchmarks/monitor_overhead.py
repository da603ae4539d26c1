"""Step time with and without a VarianceMonitor at its default sampling, on a small MLP.

Prints, per optimizer, the time of ``optimizer.step()`` alone and of a whole training iteration
(forward, backward, step), without and with the monitor, and their ratios. The monitor's cost is
paid on the sampled steps only, so times are means over windows of ``--steps`` steps (a
multiple of the sampling period). Windows without and with the monitor alternate on the same
model and optimizer, so that load from other processes hits both alike; the table gives the
best (least disturbed) of ``--repeats`` pairs, in wall time and in this process's CPU time.

    .venv/bin/python benchmarks/monitor_overhead.py [--steps 100] [--repeats 7] [--threads 2]
        [--every N]
"""

from __future__ import annotations

import argparse
import inspect
import time
from collections.abc import Callable

import torch
from torch import nn

import rectified
from rectified.variance import VarianceMonitor

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "rectified.Adam": lambda params: rectified.Adam(params, lr=1e-3),
    "rectified.RAdam": lambda params: rectified.RAdam(params, lr=1e-3),
    "rectified.Ranger": lambda params: rectified.Ranger(params, lr=1e-3),
    "torch.optim.Adam": lambda params: torch.optim.Adam(params, lr=1e-3),
    "torch.optim.RAdam": lambda params: torch.optim.RAdam(params, lr=1e-3),
}


DEFAULT_EVERY = inspect.signature(VarianceMonitor).parameters["every"].default


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
    )


def time_windows(name: str, steps: int, repeats: int, batch: int, every: int) -> dict[str, float]:
    """Best (least disturbed) seconds per step() and per iteration, wall and CPU, per variant."""
    model = small_model()
    optimizer = OPTIMIZERS[name](model.parameters())
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 256, generator=generator)
    y = torch.randint(0, 10, (batch,), generator=generator)
    loss_fn = nn.CrossEntropyLoss()
    times: dict[str, list[float]] = {}
    for window in range(repeats + 1):  # the first pair warms up
        for monitored in (False, True):
            monitor = VarianceMonitor(optimizer, every=every) if monitored else None
            step_wall = step_cpu = 0.0
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(steps):
                optimizer.zero_grad()
                loss_fn(model(x), y).backward()
                t_wall, t_cpu = time.perf_counter(), time.process_time()
                optimizer.step()
                step_wall += time.perf_counter() - t_wall
                step_cpu += time.process_time() - t_cpu
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if monitor is not None:
                monitor.detach()
            if window:
                suffix = "+monitor" if monitored else ""
                measured = {
                    "step wall": step_wall,
                    "step cpu": step_cpu,
                    "iter wall": wall,
                    "iter cpu": cpu,
                }
                for key, value in measured.items():
                    times.setdefault(key + suffix, []).append(value / steps)
    return {key: min(values) for key, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="steps per timed window")
    parser.add_argument("--repeats", type=int, default=7, help="timed pairs of windows")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--every", type=int, default=DEFAULT_EVERY, help="monitor sampling (default: its default)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_params = sum(p.numel() for p in small_model().parameters())
    print(
        f"MLP 256-512-512-10 ({n_params:,} params, 6 tensors), batch {args.batch}, "
        f"{args.threads} threads; monitor every {args.every} steps (default {DEFAULT_EVERY})"
    )
    columns = ("step wall", "step cpu", "iter wall", "iter cpu")
    header = f"{'optimizer':<19}" + "".join(
        f"{c + ' ms':>14}{'+monitor':>10}{'ratio':>7}" for c in columns
    )
    print(header)
    print("-" * len(header))
    for name in OPTIMIZERS:
        t = time_windows(name, args.steps, args.repeats, args.batch, args.every)
        cells = "".join(
            f"{t[c] * 1e3:>14.3f}{t[c + '+monitor'] * 1e3:>10.3f}{t[c + '+monitor'] / t[c]:>7.2f}"
            for c in columns
        )
        print(f"{name:<19}{cells}")


if __name__ == "__main__":
    main()
