"""The source tree's shape, as the engine redesign set it: small files with one job, and an
optimizer layer that knows engines only through their interface."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "rectified"
SOURCES = sorted(p for p in SRC.rglob("*") if p.suffix in (".py", ".h", ".cpp"))
MOST_LINES = 400


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_source_file_is_over_400_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MOST_LINES, f"{path.relative_to(SRC)} has {lines} lines: split it by job"


def test_optimizers_and_wrappers_know_no_engine_internals():
    internals = re.compile(r"rectified_fused|GroupPlan|FOREACH|PER_TENSOR")
    found = [f"{path.relative_to(SRC)}:{number}"
             for folder in ("optim", "wrappers") for path in sorted((SRC / folder).rglob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if internals.search(line)]
    assert found == []
