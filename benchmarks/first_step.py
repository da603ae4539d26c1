"""What a new user waits for: installing the package, the first step (which builds the fused
kernel on first use), and ``torch.compile`` of a training step.

Every measurement runs in a fresh interpreter. The first-step cases run a small script that
trains an MLP with ``rectified.RAdam(model.parameters())`` (``fused=None``, the default) and
prints the import time, the first and second ``step()`` and the engine that ran
(``rectified.engines.engines_of``): once with an empty kernel cache (the build is part of the
first step), then again with that cache (the kernel is loaded). The compile cases time the
first call of a ``torch.compile``'d training step (model, loss, backward, ``opt.step()``) with an
empty inductor cache, then with that cache, and the median step after it against eager (40
rounds, the two interleaved).
``--install`` first times ``pip install -c constraints.txt .`` into a new venv and runs the
cases with that venv's Python. CPU time is user + system of the child.

    .venv/bin/python benchmarks/first_step.py [--install] [--python PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FIRST_STEP = """
import json, time
start = time.perf_counter()
import torch, rectified
imported = time.perf_counter()
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 10))
opt = rectified.RAdam(model.parameters())
x, y = torch.randn(64, 512), torch.randint(0, 10, (64,))
times = []
for _ in range(2):
    torch.nn.functional.cross_entropy(model(x), y).backward()
    begin = time.perf_counter()
    opt.step()
    times.append(time.perf_counter() - begin)
    opt.zero_grad()
print(json.dumps({"import": imported - start, "first": times[0], "second": times[1],
                  "engine": rectified.engines.engines_of(opt)[0]}))
"""

COMPILED_STEP = """
import json, statistics, time
import torch, rectified
torch.manual_seed(0)

def setup():
    model = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.ReLU(),
                                torch.nn.Linear(1024, 10))
    return model, rectified.RAdam(model.parameters())

x, y = torch.randn(64, 512), torch.randint(0, 10, (64,))

def make_step(model, opt):
    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss
    return step

def timed(step):
    begin = time.perf_counter()
    step()
    return time.perf_counter() - begin

compiled = torch.compile(make_step(*setup()))
first = timed(compiled)
eager = make_step(*setup())
eager()
rounds = [(timed(compiled), timed(eager)) for _ in range(40)]  # interleaved: load hits both
print(json.dumps({"first": first, "compiled": statistics.median(c for c, _ in rounds),
                  "eager": statistics.median(e for _, e in rounds)}))
"""


def run_child(argv: list[str], env: dict[str, str]) -> tuple[str, float, float]:
    """(stdout, wall seconds, CPU seconds) of a child process; its stderr passes through."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, stdout=subprocess.PIPE, text=True, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result.stdout, wall, cpu


def install(folder: Path) -> Path:
    """Time a fresh venv and ``pip install -c constraints.txt .`` into it; its Python."""
    venv = folder / "venv"
    for label, argv in (
        ("python -m venv", [sys.executable, "-m", "venv", str(venv)]),
        ("pip install -c constraints.txt .",
         [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-c",
          str(ROOT / "constraints.txt"), str(ROOT)]),
    ):
        _, wall, cpu = run_child(argv, dict(os.environ))
        print(f"{label:<44} {wall:8.1f} s wall {cpu:8.1f} s CPU")
    return venv / "bin" / "python"


def first_steps(python: str, folder: Path) -> None:
    env = {**os.environ, "RECTIFIED_CACHE_DIR": str(folder / "kernel-cache")}
    print(f"\n{'RAdam(model.parameters()), fresh process':<44} {'wall s':>8} {'CPU s':>8} "
          f"{'import s':>9} {'1st step s':>11} {'2nd step ms':>12}  engine")
    for label in ("empty kernel cache (builds)", "kernel cached"):
        out, wall, cpu = run_child([python, "-c", FIRST_STEP], env)
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{label:<44} {wall:8.2f} {cpu:8.2f} {r['import']:9.2f} {r['first']:11.2f} "
              f"{r['second'] * 1e3:12.2f}  {r['engine']}")


def compiled_steps(python: str, folder: Path) -> None:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(folder / "inductor-cache")}
    print(f"\n{'torch.compile(training step), RAdam':<44} {'wall s':>8} {'CPU s':>8} "
          f"{'1st call s':>10} {'step ms':>8} {'eager ms':>9}")
    for label in ("empty inductor cache", "inductor cache warm"):
        out, wall, cpu = run_child([python, "-c", COMPILED_STEP], env)
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{label:<44} {wall:8.2f} {cpu:8.2f} {r['first']:10.2f} "
              f"{r['compiled'] * 1e3:8.2f} {r['eager'] * 1e3:9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--install", action="store_true",
                        help="time pip install into a new venv and measure with it")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to measure")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        python = str(install(folder)) if args.install else args.python
        first_steps(python, folder)
        compiled_steps(python, folder)
    load = os.getloadavg()
    print(f"\nload average after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
