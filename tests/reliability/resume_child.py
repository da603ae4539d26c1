"""Resumes checkpointed scenarios in a process of its own.

    python -m tests.reliability.resume_child FOLDER THREADS NAME...

loads each scenario's checkpoint from FOLDER, trains the remaining steps on fresh objects and
writes every scenario's final parameters to FOLDER/resumed.pt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from tests.reliability.resume_scenarios import SCENARIOS, checkpoint_path, resume


def main(argv: list[str]) -> None:
    folder, threads, names = Path(argv[0]), int(argv[1]), argv[2:]
    torch.set_num_threads(threads)
    results = {}
    for name in names:
        scenario = SCENARIOS[name]
        results[name] = resume(scenario, checkpoint_path(folder, scenario))
    torch.save(results, folder / "resumed.pt")


if __name__ == "__main__":
    main(sys.argv[1:])
