"""``rectified reproduce [--quick | --full] [--out DIR] [--jobs N]``: the paper's claims at
laptop scale, then the report.

Runs the variance lab, then every section of :mod:`rectified.experiments.suite` (complete runs
in ``--out`` are reused, interrupted ones resume), prints the time each section took, and
writes ``report.html`` and ``summary.md`` from the run folders.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import torch

from rectified.experiments import report, suite, sweep
from rectified.experiments.distributed import default_device


def default_jobs() -> int:
    if torch.cuda.is_available():
        return 1
    return max(1, min(os.cpu_count() or 1, 8))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="a smoke test of the machinery: tiny runs, no verdict decided")
    size.add_argument("--full", action="store_true",
                      help="5 seeds on the Transformer, longer runs (about half an hour)")
    parser.add_argument("--out", default="reproduce", help="output folder (default reproduce)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="parallel run processes (default: the CPU count, 1 on a GPU)")
    parser.add_argument("--sections", default=None,
                        help="comma-separated subset of: variance, "
                             + ", ".join(s.key for s in suite.SECTIONS))
    parser.add_argument("--no-progress", action="store_true")


def _chosen_sections(text: str | None) -> list[str]:
    known = [report.VARIANCE_KEY, *(s.key for s in suite.SECTIONS)]
    if text is None:
        return known
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    for name in chosen:
        if name not in known:
            raise ValueError(f"unknown section {name!r}; choose from {', '.join(known)}")
    return chosen


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished child processes."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                          resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_variance_lab(folder: Path, quick: bool) -> bool:
    """Write the variance lab's figures and numbers into ``folder``; False if unavailable."""
    try:
        from rectified.variance.command import write_lab
    except ImportError:
        return False
    write_lab(folder, quick=quick)
    return True


def run(args: argparse.Namespace) -> int:
    budget = suite.get_budget("quick" if args.quick else "full" if args.full else "default")
    jobs = default_jobs() if args.jobs is None else args.jobs
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    chosen = _chosen_sections(args.sections)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = default_device()
    print(f"rectified reproduce: budget {budget.name}, {jobs} jobs on {device}, into {out}")
    if budget.smoke_test:
        print("  a smoke test of the machinery: every verdict on training runs will be "
              "'budget too short to test'")
    timings: dict = {"budget": budget.name, "device": str(device), "jobs": jobs, "sections": {}}
    started, cpu_before = time.perf_counter(), cpu_seconds()
    if report.VARIANCE_KEY in chosen:
        begin = time.perf_counter()
        done = run_variance_lab(out / report.VARIANCE_KEY, quick=budget.name == "quick")
        timings["sections"][report.VARIANCE_KEY] = time.perf_counter() - begin
        print(f"  {report.VARIANCE_KEY:<14} {timings['sections'][report.VARIANCE_KEY]:6.1f} s"
              + ("" if done else "  (rectified.variance.command is not available: skipped)"))
    failures = 0
    with sweep.Workers(jobs) as workers:
        for section in suite.SECTIONS:
            if section.key not in chosen:
                continue
            specs = suite.section_specs(section, budget)
            if not specs:
                print(f"  {section.key:<14} not in the {budget.name} budget")
                continue
            begin = time.perf_counter()
            outcomes = sweep.run_all(specs, out / "runs" / section.key, jobs=jobs,
                                     progress=not args.no_progress, description=section.key,
                                     workers=workers)
            failed = [o for o in outcomes if o.summary is None]
            failures += len(failed)
            for outcome in failed:
                print(f"  FAILED {outcome.spec.run_id}: {outcome.error}")
            timings["sections"][section.key] = time.perf_counter() - begin
            print(f"  {section.key:<14} {timings['sections'][section.key]:6.1f} s  "
                  f"({len(specs)} runs)")
    timings["total"] = time.perf_counter() - started
    timings["cpu_seconds"] = cpu_seconds() - cpu_before
    timings_file = out / "timings.json"
    if args.sections is not None and timings_file.is_file():
        # a partial rerun keeps the other sections' times from the earlier run
        earlier = json.loads(timings_file.read_text())
        if earlier.get("budget") == budget.name:
            timings["sections"] = {**earlier.get("sections", {}), **timings["sections"]}
            timings["total"] = sum(timings["sections"].values())
    timings_file.write_text(json.dumps(timings, indent=2) + "\n")
    html_path, md_path, results = report.build(out)
    print(f"  {'total':<14} {timings['total']:6.1f} s  "
          f"({timings['cpu_seconds']:.0f} s of user + system CPU time)")
    for result in results:
        for verdict in result.verdicts:
            print(f"  [{verdict.status}] {result.key}: {verdict.claim}")
    print(f"report: {html_path}\nsummary: {md_path}")
    return 1 if failures else 0
