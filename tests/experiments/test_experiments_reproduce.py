"""``rectified reproduce --quick`` end to end, and ``rectified report`` rebuilding from folders."""

from __future__ import annotations

import json
import shutil
from html import escape
from pathlib import Path

import pytest

from rectified.cli import main
from rectified.experiments import report, suite, verdicts
from rectified.experiments.records import load_runs
from rectified.experiments.sections.common import better

QUICK = [s for s in suite.SECTIONS if suite.section_specs(s, suite.BUDGETS["quick"])]


@pytest.fixture(scope="module")
def quick_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reproduce")
    assert main(["reproduce", "--quick", "--out", str(out), "--no-progress", "--jobs", "2"]) == 0
    return out


def test_report_and_every_figure_exist_and_are_non_empty(quick_out: Path) -> None:
    html = (quick_out / "report.html").read_text()
    summary = (quick_out / "summary.md").read_text()
    figures = sorted((quick_out / "figures").glob("*.png"))
    lab_figures = list((quick_out / "variance").glob("*.png"))
    assert lab_figures  # theory vs simulation, r_t vs warmup, ...
    # the transformer has two figures; the lab's are embedded as well
    assert len(figures) >= len(QUICK) + 1 + len(lab_figures)
    for figure in figures:
        assert figure.stat().st_size > 1000
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"figures/{figure.name}" in summary
    assert html.count("data:image/png;base64,") == len(figures)
    for section in QUICK:
        assert escape(section.title) in html and section.title in summary
    timings = json.loads((quick_out / "timings.json").read_text())
    assert set(timings["sections"]) >= {s.key for s in QUICK}
    assert timings["cpu_seconds"] > 0


def test_every_section_has_three_seeds_per_compared_optimizer(quick_out: Path) -> None:
    for section in QUICK:
        runs = load_runs(quick_out / "runs" / section.key)
        assert len(runs) == len(suite.section_specs(section, suite.BUDGETS["quick"]))
        seeds: dict = {}
        for run in runs:
            key = (run.spec.optimizer, run.spec.lr, run.spec.warmup, run.spec.steps)
            seeds.setdefault(key, set()).add(run.spec.seed)
        assert all(len(s) >= 3 for s in seeds.values())


def test_quick_is_a_smoke_test_that_decides_no_claim(quick_out: Path) -> None:
    summary = (quick_out / "summary.md").read_text()
    html = (quick_out / "report.html").read_text()
    assert summary.split("\n")[2] == f"**{report.SMOKE_TEST}**"  # at the top
    assert html.index("smoke test of the machinery") < html.index("<h2>Verdicts</h2>")
    rows = [line for line in summary.splitlines() if line.startswith("| ")
            and line.endswith("** |") and not line.startswith("| variance |")]
    assert len(rows) >= 20
    assert all(f"**{verdicts.BUDGET_TOO_SHORT}**" in row for row in rows)


def test_verdicts_are_computed_from_the_recorded_numbers(quick_out: Path) -> None:
    runs = [r for r in load_runs(quick_out / "runs" / "lstm") if r.spec.steps == 20]
    groups = {name: [r for r in runs if r.spec.optimizer == name] for name in ("adam", "radam")}
    expected = better("RAdam beats Adam (at 20 steps)", "radam", groups["radam"], "adam",
                      groups["adam"], higher=False)
    assert expected.status == verdicts.BUDGET_TOO_SHORT
    assert "mean r_t 0.04 over 20 steps (β2 = 0.999)" in expected.evidence  # 0.0446
    summary = (quick_out / "summary.md").read_text()
    assert f"| lstm | RAdam beats Adam (at 20 steps) | **{expected.status}** |" in summary
    assert expected.evidence in summary


def test_report_rebuilds_from_folders_only(quick_out: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(quick_out / "runs", copy / "runs")
    assert main(["report", str(copy)]) == 0
    rebuilt = (copy / "summary.md").read_text()
    original = (quick_out / "summary.md").read_text()

    def sections(text: str) -> str:
        """From the first experiment section up to the timings (which the copy lacks)."""
        return text.split("## Transformer", 1)[1].split("## Time per section", 1)[0].strip()

    assert sections(rebuilt) == sections(original)
    assert "lstm: RAdam beats Adam" in capsys.readouterr().out

    # a changed record changes the report: nothing is cached elsewhere
    summary_file = next((copy / "runs" / "lstm").glob("*radam*/summary.json"))
    record = json.loads(summary_file.read_text())
    record["final_metric"] = 12345.0
    summary_file.write_text(json.dumps(record))
    _, md_path, _ = report.build(copy)
    assert sections(md_path.read_text()) != sections(rebuilt)


def test_report_of_an_empty_folder_is_a_one_line_error(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds no run folders" in err
