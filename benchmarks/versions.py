"""Step time of two versions of rectified in one process, interleaved: an A/B for refactors.

    .venv/bin/python -m benchmarks.versions OLD_SRC [--rounds 15] [--layouts 10x1M,1000x10k]
                                             [--engines reference,foreach,fused]

``OLD_SRC`` is the ``src`` folder of another checkout (e.g. ``git worktree add /tmp/old
d1ea708``, then ``/tmp/old/src``). Its ``rectified`` package is copied to a temporary folder
under the name ``rectified_before`` (every ``rectified`` identifier renamed, the C++ operator
namespace included, so both kernels load side by side) and imported beside this checkout's.
Each optimizer of each version steps its own copy of the same parameters, after 8 warm-up
steps; every candidate runs once per round in an order rotated from round to round, and the
table gives medians and their ratio to the floor probe of the same run. Separate runs of
``benchmarks.step`` move the floor itself by several percent; this comparison does not.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import sys
import tempfile
from pathlib import Path

import torch

import rectified
from benchmarks.timing import floor_probe, interleaved_medians
from rectified.engines.fused import kernel

RULES = ("RAdam", "Adam", "AdamW", "AdaBound", "Ranger")
ENGINES = {"reference": {"foreach": False}, "foreach": {"foreach": True},
           "fused": {"fused": True}}
LAYOUTS = {"10x1M": (10, 1_000_000), "1000x10k": (1000, 10_000)}
WARM_UP = 8


def renamed_copy(source: Path, folder: Path, name: str = "rectified_before") -> object:
    """``source/rectified`` copied into ``folder`` as the package ``name``, imported."""
    target = folder / name
    shutil.copytree(source / "rectified", target,
                    ignore=shutil.ignore_patterns("__pycache__"))
    for path in target.rglob("*"):
        if path.suffix in (".py", ".cpp", ".h"):
            text = path.read_text()
            path.write_text(re.sub(r"\brectified(?=[_.\s\"'/:)]|$)", name, text))
    sys.path.insert(0, str(folder))
    return importlib.import_module(name)


def load_kernel(package: object) -> None:
    """Load (building if needed) the fused kernel of either version."""
    name = package.__name__  # type: ignore[attr-defined]
    for module, call in ((f"{name}.engines.fused.kernel", "load"),
                         (f"{name}.engines.extension", "load")):
        try:
            getattr(importlib.import_module(module), call)(True)
            return
        except ModuleNotFoundError:
            continue


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old_src", type=Path)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--layouts", default="10x1M,1000x10k")
    parser.add_argument("--engines", default="reference,foreach,fused")
    args = parser.parse_args(argv)
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as folder:
        before = renamed_copy(args.old_src, Path(folder))
        load_kernel(before)
        kernel.load(True)
        for layout in args.layouts.split(","):
            count, size = LAYOUTS[layout]
            generator = torch.Generator().manual_seed(0)
            labels, runs = ["floor"], [floor_probe(count * size, device)]
            for engine in args.engines.split(","):
                for rule in RULES:
                    for package in (before, rectified):
                        params = [torch.randn(size, generator=generator).requires_grad_()
                                  for _ in range(count)]
                        for p in params:
                            p.grad = torch.randn(size, generator=generator).mul_(1e-2)
                        optimizer = getattr(package, rule)(params, lr=1e-3, **ENGINES[engine])
                        for _ in range(WARM_UP):
                            optimizer.step()
                        labels.append(f"{rule} {engine}")
                        runs.append(optimizer.step)
            times = interleaved_medians(runs, args.rounds, device)
            floor = times[0]
            print(f"\n{layout}: floor {floor * 1e3:.2f} ms, {args.rounds} rounds\n")
            print("| rule | engine | before ms | x floor | after ms | x floor | after/before |")
            print("|---|---|---:|---:|---:|---:|---:|")
            for i in range(1, len(labels), 2):
                old, new = times[i], times[i + 1]
                rule, engine = labels[i].split()
                print(f"| {rule} | {engine} | {old * 1e3:.2f} | {old / floor:.2f} | "
                      f"{new * 1e3:.2f} | {new / floor:.2f} | {new / old:.3f} |")
            del runs
    print(f"\nload average after {Path('/proc/loadavg').read_text().split()[0]}")


if __name__ == "__main__":
    main()
