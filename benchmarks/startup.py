"""Start-up time: ``import rectified`` and the ``rectified`` command against ``import torch``.

Each case runs in a fresh interpreter ``--repeats`` times; the table gives the median wall time,
the median CPU time (user + system, of the child), and the difference to ``import torch``.
``--importtime`` then lists the modules that ``import rectified; rectified.RAdam`` spends the
most time in beyond torch's own import (from ``python -X importtime``), to show where the rest
of the cost lies.

    .venv/bin/python benchmarks/startup.py [--repeats 7] [--importtime]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

PYTHON = sys.executable
COMMAND = str(Path(PYTHON).with_name("rectified"))
CASES: dict[str, list[str]] = {
    "python (nothing imported)": [PYTHON, "-c", "pass"],
    "import torch": [PYTHON, "-c", "import torch"],
    "import rectified": [PYTHON, "-c", "import rectified"],
    "import rectified; rectified.RAdam": [PYTHON, "-c", "import rectified; rectified.RAdam"],
    "import torch.optim; torch.optim.RAdam": [PYTHON, "-c",
                                              "import torch.optim; torch.optim.RAdam"],
    "rectified --help": [COMMAND, "--help"],
    "rectified --version": [COMMAND, "--version"],
    "rectified train --help": [COMMAND, "train", "--help"],
}


def run_once(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, child CPU seconds) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def measure(repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) per case; the cases alternate so that load hits all alike."""
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in CASES}
    for argv in CASES.values():  # warm the file cache
        run_once(argv)
    for _ in range(repeats):
        for name, argv in CASES.items():
            samples[name].append(run_once(argv))
    return {name: (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
            for name, runs in samples.items()}


def import_profile(top: int) -> list[tuple[str, float]]:
    """The slowest modules (cumulative ms) imported by rectified that torch alone does not."""
    def cumulative(code: str) -> dict[str, float]:
        result = subprocess.run([PYTHON, "-X", "importtime", "-c", code], capture_output=True,
                                text=True, check=True)
        times = {}
        for line in result.stderr.splitlines():
            match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
            if match:
                times[match.group(3)] = int(match.group(1)) / 1000.0
        return times

    torch_alone = cumulative("import torch")
    ours = cumulative("import torch; import rectified; rectified.RAdam")
    extra = {m: t for m, t in ours.items() if m not in torch_alone}
    return sorted(extra.items(), key=lambda item: -item[1])[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--importtime", action="store_true")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"median of {args.repeats} runs each")
    results = measure(args.repeats)
    torch_wall = results["import torch"][0]
    print(f"{'case':<40} {'wall s':>7} {'CPU s':>7} {'wall - torch':>13}")
    for name, (wall, cpu) in results.items():
        print(f"{name:<40} {wall:7.3f} {cpu:7.3f} {wall - torch_wall:+13.3f}")
    if args.importtime:
        print("\nslowest imports of `rectified.RAdam` beyond `import torch` (cumulative ms):")
        for module, ms in import_profile(args.top):
            print(f"{module:<60} {ms:8.1f}")


if __name__ == "__main__":
    main()
