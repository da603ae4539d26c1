"""The reproduce suite: one section per claim of the paper, each a list of runs plus the rule
that turns their recorded numbers into a verdict.

Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond" (arXiv 1908.03265):
Section 3 (why warmup helps: Figures 1-3), Section 5 (Table 1, Figures 4-7). Each section's
``analyze`` reads run records only, so ``rectified report`` rebuilds every number from the run
folders. Budgets scale the same sections: ``quick`` (tests), ``default`` (about a quarter of an
hour on two CPU cores), ``full`` (more steps, larger models).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

import rectified
from rectified.experiments import figures, verdicts
from rectified.experiments.records import Run, group_by
from rectified.experiments.spec import RunSpec


@dataclass(frozen=True)
class Budget:
    name: str
    seeds: tuple[int, ...]
    lm_steps: int
    lm_batch: int
    transformer_options: dict[str, Any]
    transformer_lr: float
    transformer_warmup: int
    monitor_steps: int
    lstm_steps: int
    lstm_options: dict[str, Any]
    lstm_lr: float
    image_task: str
    image_steps: int
    image_options: dict[str, Any]
    sweep_task: str  # the learning-rate and warmup sweeps
    sweep_steps: int
    sweep_options: dict[str, Any]
    robustness_lrs: dict[str, tuple[float, ...]]
    warmup_lrs: tuple[float, ...]
    warmup_lengths: tuple[int, ...]


SEEDS = (0, 1, 2)
ADAPTIVE_LRS = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
SGD_LRS = (0.01, 0.03, 0.1, 0.3, 1.0)

BUDGETS: dict[str, Budget] = {
    "quick": Budget(
        "quick", SEEDS, lm_steps=30, lm_batch=16,
        transformer_options={"width": 32, "depth": 1, "heads": 2, "seq_len": 32,
                             "eval_windows": 16, "train_bytes": 200_000},
        transformer_lr=1e-2, transformer_warmup=8, monitor_steps=8,
        lstm_steps=30,
        lstm_options={"width": 32, "seq_len": 32, "eval_windows": 16, "train_bytes": 200_000},
        lstm_lr=3e-3,
        image_task="digits-mlp", image_steps=40, image_options={"width": 32},
        sweep_task="digits-mlp", sweep_steps=40, sweep_options={"width": 32},
        robustness_lrs={"sgd": (0.03, 0.3), "adam": (1e-3, 1e-2), "radam": (1e-3, 1e-2)},
        warmup_lrs=(1e-2,), warmup_lengths=(5, 20),
    ),
    "default": Budget(
        "default", SEEDS, lm_steps=300, lm_batch=32,
        transformer_options={"width": 64, "depth": 4, "heads": 4, "seq_len": 64},
        transformer_lr=1e-2, transformer_warmup=60, monitor_steps=30,
        lstm_steps=600, lstm_options={"width": 128, "seq_len": 64}, lstm_lr=3e-3,
        image_task="mnist-cnn", image_steps=400, image_options={"width": 16},
        sweep_task="digits-mlp", sweep_steps=3000, sweep_options={"width": 128},
        robustness_lrs={"sgd": SGD_LRS, "adam": ADAPTIVE_LRS, "radam": ADAPTIVE_LRS},
        warmup_lrs=(1e-3, 1e-2, 3e-2), warmup_lengths=(10, 50, 200),
    ),
    "full": Budget(
        "full", (0, 1, 2, 3, 4), lm_steps=450, lm_batch=32,
        transformer_options={"width": 64, "depth": 6, "heads": 4, "seq_len": 64},
        transformer_lr=1e-2, transformer_warmup=150, monitor_steps=60,
        lstm_steps=1200, lstm_options={"width": 256, "seq_len": 64}, lstm_lr=3e-3,
        image_task="mnist-cnn", image_steps=1200, image_options={"width": 32},
        sweep_task="mnist-cnn", sweep_steps=300, sweep_options={"width": 8},
        robustness_lrs={"sgd": SGD_LRS, "adam": ADAPTIVE_LRS, "radam": ADAPTIVE_LRS},
        warmup_lrs=(1e-3, 1e-2, 3e-2), warmup_lengths=(10, 50, 200),
    ),
}


def get_budget(name: str) -> Budget:
    if name not in BUDGETS:
        raise ValueError(f"unknown budget {name!r}; choose from {', '.join(BUDGETS)}")
    return BUDGETS[name]


# -- results ------------------------------------------------------------------------------------
@dataclass
class Table:
    caption: str
    headers: list[str]
    rows: list[list[str]]


@dataclass
class SectionResult:
    key: str
    title: str
    claim: str
    setup: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[str, bytes]] = field(default_factory=list)  # (caption, PNG)
    verdicts: list[verdicts.Verdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Section:
    key: str  # folder name under runs/
    title: str
    claim: str  # what the paper claims, with its figure or table
    specs: Callable[[Budget], list[RunSpec]]
    analyze: Callable[[list[Run], SectionResult], None]


# -- helpers ----------------------------------------------------------------------------------
def _cell(values: Sequence[float], digits: int = 4) -> str:
    s = verdicts.stats(values)
    return f"{s.mean:.{digits}g} ± {s.sd:.2g}"


def _finals(runs: list[Run]) -> list[float]:
    return [r.final for r in runs]


def _setup(runs: list[Run]) -> str:
    """What ran, read back from the specs."""
    if not runs:
        return "no complete runs found"
    first = runs[0].spec
    seeds = sorted({r.spec.seed for r in runs})
    options = ", ".join(f"{k}={v}" for k, v in first.task_options.items()
                        if v is not None and k not in ("eval_windows", "train_bytes"))
    overrides = {k: v for r in runs for k, v in r.spec.optimizer_options.items()}
    extra = f"; optimizer options {overrides}" if overrides else ""
    seconds = sum(r.summary["seconds"] for r in runs)
    return (f"task {first.task} ({options}), {first.steps} steps of batch {first.batch_size}, "
            f"seeds {seeds}, {len(runs)} runs, {seconds:.0f} s of training in total{extra}")


def _summary_table(groups: dict[str, list[Run]], metric: str, caption: str) -> Table:
    rows = []
    for name, runs in groups.items():
        rows.append([name, f"{runs[0].spec.lr:g}", str(len(runs)), _cell(_finals(runs)),
                     _cell([r.summary["best_metric"] for r in runs]),
                     _cell([r.summary["final_train_loss"] for r in runs]),
                     str(sum(bool(r.summary["diverged"]) for r in runs))])
    return Table(caption, ["optimizer", "lr", "seeds", f"final {metric}", f"best {metric}",
                           "final train loss", "diverged"], rows)


def _ordered(runs: list[Run], order: Sequence[str]) -> dict[str, list[Run]]:
    groups = group_by(runs, lambda r: r.spec.optimizer)
    return {name: groups[name] for name in order if name in groups}


def _metric(runs: list[Run]) -> tuple[str, bool]:
    return runs[0].summary["metric_name"], bool(runs[0].summary["higher_is_better"])


# -- Transformer: why warmup helps (Section 3, Figures 1-3) -------------------------------------
TRANSFORMER_RECIPES = ("adam", "adam-warmup", "adam-2k", "adam-eps", "radam")


def transformer_specs(b: Budget) -> list[RunSpec]:
    base = RunSpec("charlm-transformer", "adam", lr=b.transformer_lr, steps=b.lm_steps,
                   batch_size=b.lm_batch, task_options=b.transformer_options,
                   monitor_steps=b.monitor_steps)
    return [replace(base, optimizer=name, seed=seed,
                    warmup=b.transformer_warmup if name in ("adam-warmup", "adam-2k") else None)
            for name in TRANSFORMER_RECIPES for seed in b.seeds]


def gradient_histogram(run: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(steps, log10 edges, counts) of the run's monitor record, or None if it has none that
    this version can read."""
    path = run.folder / "monitor.npz"
    if not path.is_file():
        return None
    from rectified.variance import VarianceMonitor

    try:
        return VarianceMonitor.load(path).gradient_histogram()
    except (ValueError, KeyError, OSError):
        return None


def distortion(run: Run) -> float:
    """Decades by which the median |gradient| fell from the first to the last monitored
    update (NaN without a monitor record); large values are the paper's 'distorted'
    distribution, mass piling up at tiny gradients."""
    histogram = gradient_histogram(run)
    if histogram is None or len(histogram[0]) < 2:
        return math.nan
    _, edges, counts = histogram
    return figures.median_log10(edges, counts[0]) - figures.median_log10(edges, counts[-1])


def analyze_transformer(runs: list[Run], result: SectionResult) -> None:
    groups = _ordered(runs, TRANSFORMER_RECIPES)
    metric, higher = _metric(runs)
    result.tables.append(_summary_table(groups, metric, "Final numbers, mean ± sd over seeds"))
    result.figures.append((
        "Training loss and validation perplexity (mean over seeds, band: min-max)",
        figures.png_bytes(figures.curves(groups, [("train_loss", "training loss"),
                                                  ("metric", metric)],
                                         "post-LN Transformer LM", log_y=(False, True)))))
    panels = []
    for name in ("adam", "adam-warmup", "radam"):
        first = min(groups.get(name, []), key=lambda r: r.spec.seed, default=None)
        histogram = gradient_histogram(first) if first is not None else None
        if first is not None and histogram is not None:
            panels.append((f"{name} (seed {first.spec.seed})", *histogram))
    if panels:
        result.figures.append((
            "|gradient| histograms over the first updates (log10 |g| bins; Figures 1-2)",
            figures.png_bytes(figures.histogram_panels(panels, "|gradient| per update"))))
    drops = {name: [distortion(r) for r in group] for name, group in groups.items()}
    result.tables.append(Table(
        "Fall of the median log10 |gradient| from the first to the last monitored update",
        ["optimizer", "decades (mean ± sd)"],
        [[name, _cell(values, 3)] for name, values in drops.items()]))

    def finals(name: str) -> list[float]:
        return _finals(groups.get(name, []))

    result.verdicts += [
        verdicts.better("Without warmup Adam ends worse than with warmup", "adam-warmup",
                        finals("adam-warmup"), "adam", finals("adam"), higher),
        verdicts.better("Adam-2k (v updated alone first) beats plain Adam", "adam-2k",
                        finals("adam-2k"), "adam", finals("adam"), higher),
        verdicts.better("Adam-eps (eps 1e-4) beats plain Adam", "adam-eps", finals("adam-eps"),
                        "adam", finals("adam"), higher),
        verdicts.better("RAdam beats plain Adam", "radam", finals("radam"), "adam",
                        finals("adam"), higher),
        verdicts.matches("RAdam does as well as Adam with warmup", "radam", finals("radam"),
                         "adam-warmup", finals("adam-warmup"), higher),
        verdicts.better("Without warmup the |gradient| distribution is distorted more",
                        "adam", drops.get("adam", []), "adam-warmup",
                        drops.get("adam-warmup", []), True),
    ]


# -- image classification (Table 1, Figure 5) -----------------------------------------------
def image_specs(b: Budget) -> list[RunSpec]:
    lrs = {"sgd": 0.1, "adam": 1e-3, "radam": 1e-3}
    return [RunSpec(b.image_task, name, lr=lrs[name], seed=seed, steps=b.image_steps,
                    task_options=b.image_options)
            for name in ("sgd", "adam", "radam") for seed in b.seeds]


def analyze_image(runs: list[Run], result: SectionResult) -> None:
    groups = _ordered(runs, ("sgd", "adam", "radam"))
    metric, higher = _metric(runs)
    result.tables.append(_summary_table(groups, metric, "Table 1 analogue, mean ± sd over seeds"))
    result.tables.append(Table("The paper's Table 1 (test accuracy, %), for reference",
                               ["", "SGD", "Adam", "RAdam"],
                               [["CIFAR-10", "91.51", "90.54", "91.38"],
                                ["ImageNet", "69.86", "66.54", "67.62"]]))
    result.figures.append(("Test accuracy and training loss (mean over seeds, band: min-max)",
                           figures.png_bytes(figures.curves(
                               groups, [("metric", metric), ("train_loss", "training loss")],
                               runs[0].spec.task))))
    finals = {name: _finals(group) for name, group in groups.items()}
    result.verdicts += [
        verdicts.better("RAdam beats Adam", "radam", finals.get("radam", []), "adam",
                        finals.get("adam", []), higher),
        verdicts.matches("RAdam does as well as SGD", "radam", finals.get("radam", []), "sgd",
                         finals.get("sgd", []), higher),
    ]


# -- LSTM language model (Figure 4) -------------------------------------------------------------
def lstm_specs(b: Budget) -> list[RunSpec]:
    return [RunSpec("charlm-lstm", name, lr=b.lstm_lr, seed=seed, steps=b.lstm_steps,
                    batch_size=b.lm_batch, task_options=b.lstm_options)
            for name in ("adam", "radam") for seed in b.seeds]


def analyze_lstm(runs: list[Run], result: SectionResult) -> None:
    groups = _ordered(runs, ("adam", "radam"))
    metric, higher = _metric(runs)
    result.tables.append(_summary_table(groups, metric, "Final numbers, mean ± sd over seeds"))
    result.figures.append(("Training loss and validation perplexity (band: min-max)",
                           figures.png_bytes(figures.curves(
                               groups, [("train_loss", "training loss"), ("metric", metric)],
                               "LSTM LM", log_y=(False, True)))))
    result.verdicts.append(verdicts.better(
        "RAdam beats Adam", "radam", _finals(groups.get("radam", [])), "adam",
        _finals(groups.get("adam", [])), higher))


# -- learning-rate robustness (Figure 6) -------------------------------------------------------
def robustness_specs(b: Budget) -> list[RunSpec]:
    return [RunSpec(b.sweep_task, name, lr=lr, seed=seed, steps=b.sweep_steps,
                    task_options=b.sweep_options)
            for name, lrs in b.robustness_lrs.items() for lr in lrs for seed in b.seeds]


def spread_over_lrs(runs: list[Run]) -> list[float]:
    """Per seed, the standard deviation of the final metric across the learning rates."""
    by_seed = group_by(runs, lambda r: r.spec.seed)
    return [float(np.std(_finals(group), ddof=1)) for group in by_seed.values()
            if len(group) > 1]


def analyze_robustness(runs: list[Run], result: SectionResult) -> None:
    groups = _ordered(runs, ("sgd", "adam", "radam"))
    metric = _metric(runs)[0]
    series = {name: {lr: _finals(g) for lr, g in group_by(group, lambda r: r.spec.lr).items()}
              for name, group in groups.items()}
    spreads = {name: spread_over_lrs(group) for name, group in groups.items()}
    rows = []
    for name, by_lr in series.items():
        cells = [f"{lr:g}: {_cell(values)}" for lr, values in sorted(by_lr.items())]
        rows.append([name, "; ".join(cells), _cell(spreads[name], 3)])
    result.tables.append(Table(f"Final {metric} per learning rate (mean ± sd over seeds) and "
                               "its spread across learning rates (sd over lrs, per seed)",
                               ["optimizer", "lr: final", "spread across lrs"], rows))
    result.figures.append((f"Final {metric} against the learning rate (Figure 6 analogue)",
                           figures.png_bytes(figures.final_vs_lr(series, metric,
                                                                 runs[0].spec.task))))
    result.notes.append("Each optimizer's grid spans the same factor of 100 around its usual "
                        "learning rate (SGD's is 10 times Adam's, as in the paper's Figure 6).")
    result.verdicts += [
        verdicts.better("RAdam is less sensitive to the learning rate than Adam", "radam",
                        spreads.get("radam", []), "adam", spreads.get("adam", []), False),
        verdicts.better("RAdam is less sensitive to the learning rate than SGD", "radam",
                        spreads.get("radam", []), "sgd", spreads.get("sgd", []), False),
    ]


# -- RAdam vs Adam with warmup (Figure 7) --------------------------------------------------------
def warmup_specs(b: Budget) -> list[RunSpec]:
    specs = [RunSpec(b.sweep_task, "adam-warmup", lr=lr, seed=seed, steps=b.sweep_steps,
                     warmup=w, task_options=b.sweep_options)
             for lr in b.warmup_lrs for w in b.warmup_lengths for seed in b.seeds]
    specs += [RunSpec(b.sweep_task, "radam", lr=lr, seed=seed, steps=b.sweep_steps,
                      task_options=b.sweep_options)
              for lr in b.warmup_lrs for seed in b.seeds]
    return specs


def analyze_warmup(runs: list[Run], result: SectionResult) -> None:
    metric, higher = _metric(runs)
    pick = max if higher else min
    series: dict[str, dict[float, list[float]]] = {}
    for run in runs:
        name = "radam" if run.spec.optimizer == "radam" else f"adam-warmup {run.spec.warmup}"
        series.setdefault(name, {}).setdefault(run.spec.lr, []).append(run.final)
    series = dict(sorted(series.items(), key=lambda item: (item[0] == "radam",
                                                           len(item[0]), item[0])))
    matches, sensitive, rows = [], [], []
    for lr in sorted({r.spec.lr for r in runs}):
        warm = {name: by_lr[lr] for name, by_lr in series.items()
                if name != "radam" and lr in by_lr}
        radam = series.get("radam", {}).get(lr, [])
        if not warm:
            continue
        means = {name: float(np.mean(v)) for name, v in warm.items()}
        best = pick(means, key=means.__getitem__)
        worst = (min if higher else max)(means, key=means.__getitem__)
        matches.append(verdicts.matches(f"lr {lr:g}", "radam", radam, best, warm[best], higher))
        sensitive.append(verdicts.better(f"lr {lr:g}", best, warm[best], worst, warm[worst],
                                         higher))
        rows.append([f"{lr:g}", *(_cell(warm[n]) for n in warm), _cell(radam) if radam else "",
                     best])
    headers = ["lr", *(n for n in series if n != "radam"), "radam", "best warmup"]
    result.tables.append(Table(f"Final {metric}, mean ± sd over seeds", headers, rows))
    result.figures.append((f"Final {metric} against the learning rate, Adam with each warmup "
                           "length and RAdam (Figure 7 analogue)",
                           figures.png_bytes(figures.final_vs_lr(series, metric,
                                                                 runs[0].spec.task))))
    result.verdicts.append(verdicts.all_of(
        "RAdam without warmup does as well as Adam with the best warmup length, at every lr",
        matches, "the match rule at every learning rate: " + verdicts.MATCH_RULE.format(
            a="radam", b="the best adam-warmup")))
    # the best length never loses to the worst, so this rule cannot give "not reproduced"
    reproduced = any(v.status == verdicts.REPRODUCED for v in sensitive)
    result.verdicts.append(verdicts.Verdict(
        "Adam-warmup is sensitive to the warmup length",
        verdicts.REPRODUCED if reproduced else verdicts.INCONCLUSIVE,
        "reproduced if at some lr the best warmup length beats the worst by more than the "
        "pooled seed spread (the better rule); inconclusive otherwise",
        "; ".join(f"[{v.claim}: {v.status}] {v.evidence}" for v in sensitive)))


SECTIONS: tuple[Section, ...] = (
    Section("transformer", "Transformer LM: why warmup helps (Figures 1-3)",
            "Without warmup, Adam's adaptive learning rate has a large variance in the first "
            "updates, which distorts the gradient distribution and leads to worse results; "
            "giving v more samples first (Adam-2k), bounding its variance (Adam-eps) or "
            "rectifying it (RAdam) avoids this.", transformer_specs, analyze_transformer),
    Section("image", "Image classification: SGD vs Adam vs RAdam (Table 1, Figure 5)",
            "RAdam beats Adam on image classification and comes close to SGD.",
            image_specs, analyze_image),
    Section("lstm", "LSTM language model: Adam vs RAdam (Figure 4)",
            "RAdam reaches a lower perplexity than Adam on an LSTM language model.",
            lstm_specs, analyze_lstm),
    Section("robustness", "Learning-rate robustness (Figure 6)",
            "RAdam's result depends less on the learning rate than Adam's and SGD's.",
            robustness_specs, analyze_robustness),
    Section("warmup", "RAdam vs Adam with warmup (Figure 7)",
            "RAdam matches Adam with a tuned warmup without tuning one, while Adam-warmup is "
            "sensitive to the warmup length.", warmup_specs, analyze_warmup),
)


def section_specs(section: Section, budget: Budget) -> list[RunSpec]:
    return [replace(spec, group=section.key).resolve() for spec in section.specs(budget)]


def rectification_note(runs: list[Run]) -> str:
    """How much of Adam's step RAdam took in these runs: r_t at the last step and on average.

    RAdam's r_t rises towards 1 over a few times 1 / (1 - β2) steps; a run much shorter than
    that trains RAdam with a smaller effective learning rate than Adam at the same lr.
    """
    radam = [r for r in runs if r.spec.optimizer in ("radam", "radamw", "ranger")]
    if not radam:
        return ""
    spec = radam[0].spec
    beta2 = float(spec.optimizer_options.get("betas", (0.9, 0.999))[1])
    terms = [rectified.rectification_term(t, beta2) for t in range(1, spec.steps + 1)]
    return (f"RAdam's rectification r_t (β2 = {beta2:g}) is {terms[-1]:.2f} at the last of "
            f"these {spec.steps} steps and {float(np.mean(terms)):.2f} on average over the "
            "run: that is the fraction of Adam's step RAdam takes at the same learning rate. "
            "Over the paper's tens of thousands of steps the average is close to 1.")


def analyze(section: Section, runs: list[Run]) -> SectionResult:
    result = SectionResult(section.key, section.title, section.claim, _setup(runs))
    if runs:
        section.analyze(runs, result)
        note = rectification_note(runs)
        if note:
            result.notes.append(note)
    else:
        result.notes.append("No complete runs: nothing to analyze.")
    return result
