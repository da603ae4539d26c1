"""The report of the run folders ``rectified train`` and ``rectified sweep`` write.

Built from the folders' files only, like the reproduce report
(:mod:`rectified.experiments.report`), but with no claims to judge: per task, a table of every
configuration (optimizer, lr, warmup) with its final and best metric over seeds, and the
training curves. Written next to the runs as ``report.html`` (self-contained) and
``summary.md`` with ``figures/``; without matplotlib the tables alone, and a note says so.
"""

from __future__ import annotations

import base64
import html
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rectified.experiments.records import Run, group_by, load_run, run_folders
from rectified.experiments.runner import is_complete

HEADERS = ["optimizer", "lr", "warmup", "seeds", "final {m}", "best {m}", "final train loss",
           "diverged", "seconds"]

STYLE = ("body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; } "
         "table { border-collapse: collapse; } td, th { border: 1px solid #ccc; "
         "padding: 0.25em 0.6em; } img { max-width: 100%; }")


@dataclass
class TaskReport:
    task: str
    metric: str
    rows: list[list[str]]
    figures: list[tuple[str, bytes]] = field(default_factory=list)  # (caption, PNG)


def _cell(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.fmean(values):.4g} ± {statistics.stdev(values):.2g}"


def _label(run: Run) -> str:
    warmup = f" w{run.spec.warmup}" if run.spec.warmup else ""
    return f"{run.spec.optimizer} lr={run.spec.lr:g}{warmup}"


def _figures(task: str, metric: str, runs: list[Run]) -> list[tuple[str, bytes]]:
    from rectified.experiments import figures  # matplotlib: only when drawing

    groups = group_by(runs, _label)
    drawn = [("Training loss and the task's metric (mean over seeds, band: min-max)",
              figures.png_bytes(figures.curves(groups, [("train_loss", "training loss"),
                                                        ("metric", metric)], task)))]
    by_optimizer = group_by(runs, lambda r: r.spec.optimizer)
    if any(len({r.spec.resolved.lr for r in group}) > 1 for group in by_optimizer.values()):
        series = {name: {lr: [r.final for r in group if r.spec.resolved.lr == lr]
                         for lr in sorted({r.spec.resolved.lr for r in group})}
                  for name, group in by_optimizer.items()}
        drawn.append((f"Final {metric} against the learning rate",
                      figures.png_bytes(figures.final_vs_lr(series, metric, task))))
    return drawn


def task_reports(runs: list[Run], notes: list[str]) -> list[TaskReport]:
    """One report per task; figures are left out (with a note) without matplotlib."""
    reports = []
    for task, task_runs in sorted(group_by(runs, lambda r: r.spec.task).items()):
        metric = task_runs[0].summary["metric_name"]
        rows = []
        for _, group in sorted(group_by(task_runs, _label).items()):
            spec = group[0].spec
            rows.append([spec.optimizer, f"{spec.lr:g}", str(spec.warmup or 0), str(len(group)),
                         _cell([r.final for r in group]),
                         _cell([r.summary["best_metric"] for r in group]),
                         _cell([r.summary["final_train_loss"] for r in group]),
                         str(sum(bool(r.summary["diverged"]) for r in group)),
                         f"{sum(r.summary['seconds'] for r in group):.1f}"])
        report = TaskReport(task, metric, rows)
        try:
            report.figures = _figures(task, metric, task_runs)
        except ModuleNotFoundError as error:
            if (error.name or "").split(".")[0] != "matplotlib":
                raise
            if not notes:
                notes.append("matplotlib is not installed: no figures "
                             "(pip install 'rectified[experiments]').")
        reports.append(report)
    return reports


def build(folder: str | Path) -> tuple[Path, Path, list[TaskReport]]:
    """Write ``report.html``, ``summary.md`` and ``figures/`` for the runs in ``folder`` (see
    :func:`rectified.experiments.records.run_folders`); a folder that is one run gets its
    own report."""
    root = Path(folder)
    folders = run_folders(root)
    if not folders:
        raise ValueError(f"{str(folder)!r} holds no run folders; give a folder written by "
                         "rectified train, sweep or reproduce")
    runs = [load_run(f) for f in folders if is_complete(f)]
    unfinished = [f for f in folders if not is_complete(f)]
    if not runs:
        raise ValueError(f"none of the {len(folders)} run folders in {str(folder)!r} is "
                         "complete; rerun the command that started them to finish them")
    notes = []
    if unfinished:
        notes.append(f"{len(unfinished)} unfinished run folders are left out (rerun the "
                     "command that started them to resume): "
                     + ", ".join(f.name for f in unfinished))
    reports = task_reports(runs, notes)
    figure_dir = root / "figures"
    names: dict[tuple[str, int], str] = {}
    for report in reports:
        for index, (_, png) in enumerate(report.figures, 1):
            figure_dir.mkdir(exist_ok=True)
            names[(report.task, index)] = f"{report.task}_{index}.png"
            (figure_dir / names[(report.task, index)]).write_bytes(png)
    title = f"rectified report: {len(runs)} runs in {root}"
    html_path, md_path = root / "report.html", root / "summary.md"
    html_path.write_text(render_html(title, reports, notes))
    md_path.write_text(render_markdown(title, reports, notes, names))
    return html_path, md_path, reports


def render_markdown(title: str, reports: list[TaskReport], notes: list[str],
                    names: dict[tuple[str, int], str]) -> str:
    lines = [f"# {title}", ""]
    for report in reports:
        headers = [h.format(m=report.metric) for h in HEADERS]
        lines += [f"## {report.task}", "", "| " + " | ".join(headers) + " |",
                  "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(row) + " |" for row in report.rows]
        lines.append("")
        for index, (caption, _) in enumerate(report.figures, 1):
            lines += [f"![{caption}](figures/{names[(report.task, index)]})", ""]
    lines += [*notes, ""] if notes else []
    return "\n".join(lines)


def render_html(title: str, reports: list[TaskReport], notes: list[str]) -> str:
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
             f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for report in reports:
        head = "".join(f"<th>{html.escape(h.format(m=report.metric))}</th>" for h in HEADERS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                       for row in report.rows)
        parts += [f"<h2>{html.escape(report.task)}</h2>", f"<table><tr>{head}</tr>{body}</table>"]
        for caption, png in report.figures:
            data = base64.b64encode(png).decode("ascii")
            parts.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,"
                         f"{data}'><figcaption>{html.escape(caption)}</figcaption></figure>")
    parts += [f"<p>{html.escape(note)}</p>" for note in notes]
    parts.append("</body></html>")
    return "\n".join(parts)
