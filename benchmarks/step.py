"""Optimizer step time against the memory-bandwidth floor, for every engine and library.

    .venv/bin/python -m benchmarks.step [--rounds 15] [--layouts 10x1M,1000x10k,10x5M,10x1Mi]
                                         [--device cpu] [--json benchmarks/results/step.json]

In one process, per layout of parameters (10 tensors of 1M = 10M params; 1,000 tensors of
10k = 10M; 10 tensors of 5M = 50M, with the headline variants only), it measures the floor (a
fused pass moving the 28 bytes per parameter an Adam-family step must move) and the median step
of every variant (:mod:`benchmarks.variants`), timed interleaved (:mod:`benchmarks.timing`). The
table gives ms, ratio to the fastest variant, ratio to the floor, bytes of state per parameter
and the first step's time (state allocation, and compilation for torch.compile'd variants).
torch.compile'd variants run in the first layout only: they compile per list of tensor shapes,
which takes minutes for 1,000 tensors. Then an end-to-end number: the step's share of a
training iteration of a small MLP. Results are also written as JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import rectified
from benchmarks.timing import STEP_BYTES_PER_PARAM, floor_probe, interleaved_medians, timed
from benchmarks.variants import Variant, all_variants, headline_variants
from rectified.engines.fused.engine import available


@dataclass(frozen=True)
class Layout:
    name: str
    tensors: int
    size: int
    headline_only: bool = False

    @property
    def numel(self) -> int:
        return self.tensors * self.size


LAYOUTS = {
    "10x1M": Layout("10x1M", 10, 1_000_000),
    "1000x10k": Layout("1000x10k", 1000, 10_000),
    "10x5M": Layout("10x5M", 10, 5_000_000, headline_only=True),
    # Tensors of whole blocks: torchao's AdamW8bit keeps float32 state for any other size.
    "10x1Mi": Layout("10x1Mi", 10, 1 << 20),
}


def state_bytes_per_param(optimizer: torch.optim.Optimizer, numel: int) -> float:
    """Bytes of per-parameter state (step counters left out), the wrapped optimizer's too."""
    total = 0
    for opt in (optimizer, getattr(optimizer, "optimizer", None)):
        for state in getattr(opt, "state", {}).values():
            for value in state.values():
                if torch.is_tensor(value) and value.dim() > 0:
                    total += value.numel() * value.element_size()
    return total / numel


def make_params(layout: Layout, device: torch.device) -> list[torch.Tensor]:
    """Parameters, then their gradients, allocated as a model and its first backward would."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    params = [torch.randn(layout.size, generator=generator).to(device).requires_grad_()
              for _ in range(layout.tensors)]
    for p in params:
        p.grad = torch.randn(layout.size, generator=generator).mul_(1e-2).to(device)
    return params


def bench_layout(layout: Layout, device: torch.device, rounds: int, compile_torch: bool) -> dict:
    params = make_params(layout, device)
    variants: list[Variant] = (headline_variants() if layout.headline_only
                               else all_variants(compile_torch))
    labels, steps, rows = ["floor (28 B/param probe)"], [], []
    probe = floor_probe(layout.numel, device)
    if probe is None:
        raise SystemExit("no floor probe: build the kernel (python -m rectified.engines.build)")
    steps.append(probe)
    rows.append({"first_step_s": None, "state_bytes_per_param": None, "bytes_moved": 28.0})
    # Each state format's own floor: the same probe over fewer elements, moving its bytes.
    own_floors = sorted({v.bytes_moved for v in variants} - {STEP_BYTES_PER_PARAM})
    for moved in own_floors:
        labels.append(f"floor ({moved:.2f} B/param probe)")
        steps.append(floor_probe(round(layout.numel * moved / STEP_BYTES_PER_PARAM), device))
        rows.append({"first_step_s": None, "state_bytes_per_param": None, "bytes_moved": moved})
    for variant in variants:
        optimizer = variant.build(params)
        step = torch.compile(optimizer.step) if variant.compiled else optimizer.step
        try:
            first = timed(step, device)
            step()
        except Exception as error:  # a variant that fails (e.g. to compile) is reported, not fatal
            print(f"  {variant.label}: failed ({type(error).__name__}: {error})"[:200])
            continue
        labels.append(variant.label)
        steps.append(step)
        rows.append({"first_step_s": first,
                     "state_bytes_per_param": state_bytes_per_param(optimizer, layout.numel),
                     "library": variant.library, "rule": variant.rule,
                     "engine": variant.engine, "state": variant.state or "float32",
                     "bytes_moved": variant.bytes_moved})
    medians = interleaved_medians(steps, rounds, device)
    floor = medians[0]
    floors = {row["bytes_moved"]: seconds for row, seconds in zip(rows, medians)
              if row["first_step_s"] is None}
    fastest = min(s for row, s in zip(rows, medians) if row["first_step_s"] is not None)
    records = []
    for label, row, seconds in zip(labels, rows, medians):
        records.append({"variant": label, "ms": seconds * 1e3, "x_fastest": seconds / fastest,
                        "x_floor": seconds / floor,
                        "x_own_floor": seconds / floors.get(row["bytes_moved"], floor), **row})
    del steps, params
    gc.collect()
    return {"layout": layout.name, "numel": layout.numel, "tensors": layout.tensors,
            "floor_ms": floor * 1e3,
            "floor_gb_per_s": STEP_BYTES_PER_PARAM * layout.numel / floor / 1e9,
            "rows": records}


def print_layout(result: dict) -> None:
    print(f"\n## {result['layout']}: {result['numel'] / 1e6:.0f}M params in "
          f"{result['tensors']} tensors; floor {result['floor_ms']:.2f} ms "
          f"({result['floor_gb_per_s']:.1f} GB/s at {STEP_BYTES_PER_PARAM} B/param)\n")
    print(f"| {'variant':46s} | {'ms':>8s} | {'x fastest':>9s} | {'x floor':>7s} | "
          f"{'x own floor':>11s} | {'B moved':>7s} | {'state B/param':>13s} | "
          f"{'first step s':>12s} |")
    print(f"|{'-' * 48}|{'-' * 10}:|{'-' * 10}:|{'-' * 8}:|{'-' * 12}:|{'-' * 8}:|{'-' * 14}:|"
          f"{'-' * 13}:|")
    for row in sorted(result["rows"], key=lambda r: r["ms"]):
        state = row["state_bytes_per_param"]
        first = row["first_step_s"]
        print(f"| {row['variant']:46s} | {row['ms']:8.2f} | {row['x_fastest']:9.2f} | "
              f"{row['x_floor']:7.2f} | {row['x_own_floor']:11.2f} | {row['bytes_moved']:7.2f} | "
              f"{'' if state is None else f'{state:.2f}':>13s} | "
              f"{'' if first is None else f'{first:.2f}':>12s} |")


def small_model(device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                         nn.Linear(1024, 10)).to(device)


def end_to_end(device: torch.device, rounds: int) -> list[dict]:
    """Step time / training-iteration time of a 1.6M-param MLP, batch 64."""
    inputs = torch.randn(64, 512, device=device)
    targets = torch.randint(0, 10, (64,), device=device)
    builds = {
        "rectified RAdam fused": lambda ps: rectified.RAdam(ps, fused=True),
        "rectified RAdam foreach": lambda ps: rectified.RAdam(ps, foreach=True),
        "torch.optim RAdam foreach": lambda ps: torch.optim.RAdam(ps, foreach=True),
        "torch.optim Adam fused": lambda ps: torch.optim.Adam(ps, fused=True),
    }
    iterations, steps = {}, {}

    def iteration(model: nn.Module, optimizer: torch.optim.Optimizer, label: str) -> None:
        start = time.perf_counter()
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets).backward()
        step_start = time.perf_counter()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        end = time.perf_counter()
        steps.setdefault(label, []).append(end - step_start)
        iterations.setdefault(label, []).append(end - start)

    runs = []
    for label, make in builds.items():
        model = small_model(device)
        optimizer = make(model.parameters())
        iteration(model, optimizer, label)
        steps[label], iterations[label] = [], []
        runs.append(lambda m=model, o=optimizer, label=label: iteration(m, o, label))
    interleaved_medians(runs, rounds * 4, device)
    return [{"optimizer": label, "iteration_ms": statistics.median(iterations[label]) * 1e3,
             "step_ms": statistics.median(steps[label]) * 1e3,
             "step_share": statistics.median(steps[label]) / statistics.median(iterations[label])}
            for label in builds]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--layouts", default="10x1M,1000x10k,10x5M")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile variants")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/step.json"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu" and not available(build_if_missing=True):
        raise SystemExit("the fused kernel could not be built; see the warning above")
    load_before = os.getloadavg()
    print(f"# step benchmark: torch {torch.__version__}, {device}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} cores, "
          f"load average before {load_before[0]:.2f}")
    results = []
    for index, name in enumerate(args.layouts.split(",")):
        layout = LAYOUTS[name]
        compile_torch = not args.no_compile and index == 0
        results.append(bench_layout(layout, device, args.rounds, compile_torch))
        print_layout(results[-1])
    e2e = end_to_end(device, args.rounds)
    print("\n## end to end: step share of a training iteration (MLP 512-1024-1024-10, "
          "batch 64)\n")
    print(f"| {'optimizer':28s} | {'iteration ms':>12s} | {'step ms':>8s} | {'share':>6s} |")
    print(f"|{'-' * 30}|{'-' * 13}:|{'-' * 9}:|{'-' * 7}:|")
    for row in e2e:
        print(f"| {row['optimizer']:28s} | {row['iteration_ms']:12.2f} | {row['step_ms']:8.2f} | "
              f"{row['step_share']:6.1%} |")
    load_after = os.getloadavg()
    print(f"\nload average after {load_after[0]:.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "load_average_before": load_before, "load_average_after": load_after,
        "layouts": results, "end_to_end": e2e}, indent=1))
    print(f"results: {args.json}")


if __name__ == "__main__":
    main()
