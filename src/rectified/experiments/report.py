"""The report: built from a reproduce folder's files only (run folders, the variance lab's
output, the recorded section times), as one self-contained HTML page with its figures embedded
as base64 PNGs, plus a Markdown summary with the figures beside it in ``figures/``.

Layout of a reproduce folder::

    variance/          the variance lab's figures and numbers (``lab.json``)
    runs/<section>/    one folder per run (see :mod:`rectified.experiments.runner`)
    timings.json       seconds per section, written by ``rectified reproduce``
    report.html, summary.md, figures/   written here
"""

from __future__ import annotations

import base64
import html
import json
from collections import Counter
from pathlib import Path
from typing import Any

from rectified.experiments import interpretation, suite, verdicts
from rectified.experiments.budgets import BUDGETS
from rectified.experiments.records import load_runs

VARIANCE_KEY = "variance"


def variance_result(folder: Path) -> suite.SectionResult:
    """The variance lab's section: its figures, and verdicts from ``variance_lab.json``."""
    result = suite.SectionResult(
        VARIANCE_KEY, "The variance of the adaptive learning rate (Sections 3-4)",
        "Var[psi] of Adam's adaptive learning rate is divergent for the first updates and "
        "falls as the number of samples rho grows (Theorem 1); the rectification term r_t "
        "makes the variance constant and acts like a learning-rate warmup.")
    lab_file = folder / "variance_lab.json"
    if not lab_file.is_file():
        result.notes.append("The variance lab did not run (no variance/variance_lab.json).")
        return result
    lab = json.loads(lab_file.read_text())
    numbers = lab.get("numbers", {})
    result.setup = ("closed forms of Theorem 1 and Monte Carlo simulation of psi for i.i.d. "
                    "Gaussian gradients" + (" (quick sizes)" if lab.get("quick") else ""))
    for png in sorted(folder.glob("*.png")):
        result.figures.append((png.stem.replace("_", " "), png.read_bytes()))
    flat = {k: v for k, v in _flatten(numbers).items() if isinstance(v, int | float)}
    result.tables.append(suite.Table("Numbers recorded by the variance lab",
                                     ["quantity", "value"],
                                     [[k, f"{v:.6g}"] for k, v in flat.items()]))
    result.verdicts += variance_verdicts(numbers)
    return result


def variance_verdicts(numbers: dict[str, Any]) -> list[verdicts.Verdict]:
    """Verdicts on the lab's numbers; each rule is a threshold stated in the verdict."""
    found: list[verdicts.Verdict] = []

    def check(claim: str, keys: tuple[str, ...], test: Any, rule: str) -> None:
        value: Any = numbers
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            found.append(verdicts.Verdict(claim, verdicts.INCONCLUSIVE, rule,
                                          f"{'.'.join(keys)} not recorded"))
            return
        status = verdicts.REPRODUCED if test(value) else verdicts.NOT_REPRODUCED
        found.append(verdicts.Verdict(claim, status, rule, f"{'.'.join(keys)} = {value}"))

    check("Var[psi] falls as rho grows (Theorem 1)", ("variance_vs_rho", "decreasing_in_rho"),
          bool, "reproduced if the closed form decreases on the whole grid of rho")
    check("Monte Carlo matches Theorem 1", ("variance_vs_rho",
                                            "max_abs_z_monte_carlo_rho_ge_8"),
          lambda z: z <= 4.0, "reproduced if every simulated variance for rho >= 8 lies within "
          "4 standard errors of the closed form")
    t1 = numbers.get("variance_vs_step", {}).get("sma_variance_t1")
    t10 = numbers.get("variance_vs_step", {}).get("sma_variance_t10")
    if t1 is not None and t10:
        status = verdicts.REPRODUCED if t1 > 100 * t10 else verdicts.NOT_REPRODUCED
        found.append(verdicts.Verdict(
            "The variance is divergent at the first update", status,
            "reproduced if the simulated Var[psi_1] exceeds 100 times Var[psi_10] (an infinite "
            "variance shows as a blow-up of its estimate)",
            f"Var[psi_1] = {t1:.4g}, Var[psi_10] = {t10:.4g}"))
    check("Rectification keeps the variance constant (to first order)",
          ("rectification", "max_abs_ratio_minus_1_rho_t_ge_20", "0.999"),
          lambda x: x <= 0.2, "reproduced if r_t^2 Var[psi(rho_t)] / Var[psi(rho_inf)] is "
          "within 20% of 1 wherever rho_t >= 20 (beta2 = 0.999)")
    return found


def _flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(values, dict):
        flat: dict[str, Any] = {}
        for key, value in values.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): values}


def collect(out_dir: str | Path) -> list[suite.SectionResult]:
    """Every section's result, recomputed from the folder's files."""
    out = Path(out_dir)
    results = []
    if (out / VARIANCE_KEY).is_dir():
        results.append(variance_result(out / VARIANCE_KEY))
    for section in suite.SECTIONS:
        runs = load_runs(out / "runs" / section.key)
        if runs or (out / "runs" / section.key).is_dir():
            results.append(suite.analyze(section, runs))
    discussion = interpretation.variance_explanation(results)
    if discussion is not None:
        results.append(discussion)
    return results


def build(out_dir: str | Path) -> tuple[Path, Path, list[suite.SectionResult]]:
    """Write ``report.html``, ``summary.md`` and ``figures/``; return their paths and results."""
    out = Path(out_dir)
    if not out.is_dir():
        raise ValueError(f"no such folder {str(out_dir)!r}")
    results = collect(out)
    if not results:
        raise ValueError(f"{str(out_dir)!r} holds no run folders (expected runs/<section>/...)")
    timings_file = out / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    figure_dir = out / "figures"
    figure_dir.mkdir(exist_ok=True)
    figure_files: dict[tuple[str, int], str] = {}
    for result in results:
        for index, (_, png) in enumerate(result.figures, 1):
            name = f"{result.key}_{index}.png"
            (figure_dir / name).write_bytes(png)
            figure_files[(result.key, index)] = name
    html_path, md_path = out / "report.html", out / "summary.md"
    html_path.write_text(render_html(results, timings))
    md_path.write_text(render_markdown(results, timings, figure_files))
    return html_path, md_path, results


# -- rendering ------------------------------------------------------------------------------
def _tally(results: list[suite.SectionResult]) -> Counter:
    return Counter(v.status for r in results for v in r.verdicts)


SMOKE_TEST = ("This is a smoke test of the machinery (`--quick`): tiny models and runs far "
              "shorter than any claim needs, so every verdict on training runs is 'budget too "
              "short to test'. Its numbers say nothing about the paper; run the default or "
              "`--full` budget for that.")


def is_smoke_test(timings: dict[str, Any]) -> bool:
    budget = BUDGETS.get(str(timings.get("budget")))
    return budget is not None and budget.smoke_test


def _timing_lines(timings: dict[str, Any]) -> list[tuple[str, str]]:
    sections = timings.get("sections", {})
    lines = [(name, f"{seconds:.0f} s") for name, seconds in sections.items()]
    if "total" in timings:
        lines.append(("total", f"{timings['total']:.0f} s"))
    if "cpu_seconds" in timings:
        lines.append(("user + system CPU time, all processes", f"{timings['cpu_seconds']:.0f} s"))
    return lines


def render_markdown(results: list[suite.SectionResult], timings: dict[str, Any],
                    figure_files: dict[tuple[str, int], str]) -> str:
    lines = ["# rectified reproduce: summary", ""]
    if is_smoke_test(timings):
        lines += [f"**{SMOKE_TEST}**", ""]
    if timings:
        lines.append(f"Budget `{timings.get('budget', '?')}`, device {timings.get('device', '?')},"
                     f" {timings.get('jobs', '?')} parallel jobs.")
        lines.append("")
    tally = _tally(results)
    lines += ["Verdicts: " + ", ".join(f"{n} {s}" for s, n in sorted(tally.items())), ""]
    lines += ["| section | claim | verdict |", "|---|---|---|"]
    for result in results:
        for verdict in result.verdicts:
            lines.append(f"| {result.key} | {verdict.claim} | **{verdict.status}** |")
    lines.append("")
    for result in results:
        lines += [f"## {result.title}", "", f"*Paper:* {result.claim}", ""]
        if result.setup:
            lines += [f"*Setup:* {result.setup}", ""]
        for table in result.tables:
            lines += [f"{table.caption}:", "", "| " + " | ".join(table.headers) + " |",
                      "|" + "---|" * len(table.headers)]
            lines += ["| " + " | ".join(row) + " |" for row in table.rows]
            lines.append("")
        for verdict in result.verdicts:
            lines += [f"- **{verdict.status}**: {verdict.claim}. Rule: {verdict.rule}. "
                      f"Numbers: {verdict.evidence}."]
        if result.verdicts:
            lines.append("")
        for index, (caption, _) in enumerate(result.figures, 1):
            lines += [f"![{caption}](figures/{figure_files[(result.key, index)]})", ""]
        for note in result.notes:
            lines += [note, ""]
    if timings:
        lines += ["## Time per section", "", "| section | time |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in _timing_lines(timings)]
        lines.append("")
    return "\n".join(lines)


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
.reproduced { color: #176f2c; font-weight: bold; }
.not-reproduced { color: #a1261b; font-weight: bold; }
.inconclusive { color: #8a6d00; font-weight: bold; }
.too-short { color: #666; font-weight: bold; }
.smoke { background: #fff4d6; border: 1px solid #e0c060; padding: 0.6em 1em; }
img { max-width: 100%; }
.rule { color: #555; font-size: 0.85em; }
"""


def _status_class(status: str) -> str:
    return {verdicts.REPRODUCED: "reproduced", verdicts.NOT_REPRODUCED: "not-reproduced",
            verdicts.BUDGET_TOO_SHORT: "too-short"}.get(status, "inconclusive")


def _html_table(headers: list[str], rows: list[list[str]], caption: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<tr>{head}</tr>{body}</table>"


def render_html(results: list[suite.SectionResult], timings: dict[str, Any]) -> str:
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
             "<title>rectified reproduce</title>", f"<style>{STYLE}</style></head><body>",
             "<h1>rectified reproduce</h1>",
             *([f"<p class='smoke'><b>{html.escape(SMOKE_TEST)}</b></p>"]
               if is_smoke_test(timings) else []),
             "<p>Liu et al., <i>On the Variance of the Adaptive Learning Rate and Beyond</i> "
             "(arXiv 1908.03265), at laptop scale. Every number below is read from the run "
             "folders; every verdict is computed from those numbers by the rule shown.</p>"]
    if timings:
        parts.append(f"<p>Budget <b>{html.escape(str(timings.get('budget', '?')))}</b>, device "
                     f"{html.escape(str(timings.get('device', '?')))}, "
                     f"{html.escape(str(timings.get('jobs', '?')))} parallel jobs.</p>")
    rows = [[r.key, v.claim, v.status] for r in results for v in r.verdicts]
    parts.append("<h2>Verdicts</h2>" + _html_table(["section", "claim", "verdict"], rows))
    for result in results:
        parts.append(f"<h2>{html.escape(result.title)}</h2>")
        parts.append(f"<p><b>Paper:</b> {html.escape(result.claim)}</p>")
        if result.setup:
            parts.append(f"<p><b>Setup:</b> {html.escape(result.setup)}</p>")
        for caption, png in result.figures:
            data = base64.b64encode(png).decode("ascii")
            parts.append(f"<figure><img alt='{html.escape(caption)}' "
                         f"src='data:image/png;base64,{data}'>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        for table in result.tables:
            parts.append(_html_table(table.headers, table.rows, table.caption))
        if result.verdicts:
            parts.append("<ul>")
            for v in result.verdicts:
                parts.append(f"<li><span class='{_status_class(v.status)}'>"
                             f"{html.escape(v.status)}</span>: {html.escape(v.claim)}<br>"
                             f"<span class='rule'>Rule: {html.escape(v.rule)}.<br>Numbers: "
                             f"{html.escape(v.evidence)}</span></li>")
            parts.append("</ul>")
        for note in result.notes:
            parts.append(f"<p>{html.escape(note)}</p>")
    if timings:
        parts.append("<h2>Time per section</h2>" + _html_table(
            ["section", "time"], [list(line) for line in _timing_lines(timings)]))
    parts.append("</body></html>")
    return "\n".join(parts)
