"""``rectified report DIR``: rebuild ``report.html`` and ``summary.md`` from run folders,
without training anything.

``DIR`` is what another command wrote: a ``rectified reproduce`` folder gets the reproduction
report with its verdicts (:mod:`rectified.experiments.report`); a ``train`` or ``sweep``
``--out`` folder, or one run folder, gets a table and curves of its runs
(:mod:`rectified.experiments.folder_report`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rectified.folders import writable_folder

# the names a reproduce folder holds (rectified.experiments.report's layout)
REPRODUCE_MARKS = ("variance/variance_lab.json", "timings.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs_dir", metavar="DIR",
                        help="a folder written by rectified train, sweep or reproduce")


def is_reproduce_folder(folder: Path) -> bool:
    """A reproduce folder: its variance lab, its timings or ``runs/<section>/<run>/``."""
    return (any((folder / mark).is_file() for mark in REPRODUCE_MARKS)
            or any(folder.glob("runs/*/*/spec.json")))


def run(args: argparse.Namespace) -> int:
    folder = Path(args.runs_dir)
    if not folder.is_dir():
        raise ValueError(f"no such folder {args.runs_dir!r}")
    writable_folder(folder, "DIR")  # the report is written next to the runs
    if is_reproduce_folder(folder):
        from rectified.experiments import report

        html_path, md_path, results = report.build(folder)
        for result in results:
            for verdict in result.verdicts:
                print(f"[{verdict.status}] {result.key}: {verdict.claim}")
    else:
        from rectified.experiments import folder_report

        html_path, md_path, reports = folder_report.build(folder)
        for task in reports:
            count = len(task.rows)
            print(f"{task.task}: {count} configuration{'s' if count > 1 else ''}")
    print(f"report: {html_path}\nsummary: {md_path}")
    return 0
