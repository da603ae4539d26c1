"""The documentation runs: every ``>>>`` example in src/ (doctest) and every Python block of
README.md and docs/*.md, each block in a fresh namespace, in a temporary working directory (the
tour writes ``monitor.npz``), so a renamed argument or a changed result breaks a test."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest
import torch

import rectified

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)

# Blocks that are fragments of a program, not programs: their first line, and why they do not run.
FRAGMENTS = {
    "# Hugging Face transformers": "trainer recipes: tests/integrations trains, checkpoints and "
                                   "resumes with each of them",
    "opt = rectified.Adam(model.parameters(), lr=1e-3)\nscheduler = ScheduleLR(opt, schedule)":
        "the order of loading a checkpoint; needs a training run's checkpoint",
}


def _blocks() -> list[tuple[str, str]]:
    """(id, code) of every Python block of the documents."""
    found = []
    for document in DOCUMENTS:
        for number, match in enumerate(BLOCK.finditer(document.read_text()), 1):
            found.append((f"{document.name}-{number}", match.group(1)))
    return found


def _fragment(code: str) -> str | None:
    return next((why for start, why in FRAGMENTS.items() if code.startswith(start)), None)


def _modules() -> list[str]:
    return sorted(info.name for info in pkgutil.walk_packages(rectified.__path__, "rectified.")
                  if not info.name.endswith("__main__"))


def test_every_fragment_is_still_in_the_documents():
    codes = [code for _, code in _blocks()]
    for start in FRAGMENTS:
        assert any(code.startswith(start) for code in codes), f"no block starts with {start!r}"


@pytest.mark.parametrize(("block", "code"), _blocks(), ids=[name for name, _ in _blocks()])
def test_documented_block_runs(block, code, tmp_path, monkeypatch):
    why = _fragment(code)
    if why is not None:
        pytest.skip(f"{block} is a fragment: {why}")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    # what a block may take as given: a model with numbered blocks and a LayerNorm
    model = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.LayerNorm(10),
                                torch.nn.Linear(10, 1))
    exec(compile(code, block, "exec"), {"__name__": "__doc_block__", "torch": torch,
                                       "rectified": rectified, "model": model})


def test_docstring_examples_pass():
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    examples = 0
    for name in _modules():
        module = importlib.import_module(name)
        for test in finder.find(module, name):
            examples += len(test.examples)
            runner.run(test)
    results = runner.summarize(verbose=False)
    assert examples > 0
    assert results.failed == 0, f"{results.failed} of {results.attempted} docstring examples failed"
