"""``rectified report DIR``: rebuild ``report.html`` and ``summary.md`` from the run folders of
a ``rectified reproduce`` output folder, without training anything."""

from __future__ import annotations

import argparse

from rectified.experiments import report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs_dir", metavar="RUNS_DIR",
                        help="a folder written by rectified reproduce")


def run(args: argparse.Namespace) -> int:
    html_path, md_path, results = report.build(args.runs_dir)
    for result in results:
        for verdict in result.verdicts:
            print(f"[{verdict.status}] {result.key}: {verdict.claim}")
    print(f"report: {html_path}\nsummary: {md_path}")
    return 0
