"""RAdam vs Adam (and Adam with the untuned warmup) at geometrically growing step budgets.

At a budget of T updates RAdam takes, on average, the fraction mean(r_t) of Adam's step at the
same learning rate; for β2 = 0.999 that is 0.29 over 400 updates and 0.83 over 6,000. Where RAdam
trails Adam on a task that trains well without warmup, the question is whether the gap closes as
the budget grows. The image and LSTM sections carry the paper's Table 1 and Figure 4 claims at
their largest budget; the digits section is the cheap one that reaches the budget need in the
default run.
"""

from __future__ import annotations

from collections.abc import Sequence

from rectified.experiments import figures, needs, verdicts
from rectified.experiments.budgets import Budget, Setup
from rectified.experiments.records import Run, group_by
from rectified.experiments.sections.common import (
    Section,
    SectionResult,
    Table,
    finals,
    matches,
    metric_of,
    ordered,
    summary_table,
)
from rectified.experiments.sections.common import (
    better as better_verdict,
)
from rectified.experiments.spec import RunSpec

ARMS = ("adam", "adam-untuned", "radam")
# SGD (momentum 0.9) at a constant lr 0.1 collapses to chance after 3,000-5,000 steps on the
# CNN (the paper decays its lr); 0.03 stays at its best accuracy through 6,000 steps
SGD_LR = 0.03


def _specs(setup: Setup, budgets: Sequence[int], seeds: Sequence[int], sgd: bool = False
           ) -> list[RunSpec]:
    runs = [setup.spec(name, seed, steps=steps)
            for steps in budgets for name in ARMS for seed in seeds]
    if sgd and budgets:
        runs += [setup.spec("sgd", seed, steps=max(budgets), lr=SGD_LR) for seed in seeds]
    return runs


def image_specs(b: Budget) -> list[RunSpec]:
    return _specs(b.image, b.image_budgets, b.scaling_seeds, sgd=True)


def lstm_specs(b: Budget) -> list[RunSpec]:
    return _specs(b.lstm, b.lstm_budgets, b.scaling_seeds)


def digits_specs(b: Budget) -> list[RunSpec]:
    return _specs(b.digits, b.digits_budgets, b.scaling_seeds)


def _gap(a: list[Run], b: list[Run], higher: bool) -> tuple[float, float]:
    """(how much better a's mean is than b's, pooled seed spread)."""
    sa, sb = verdicts.stats(finals(a)), verdicts.stats(finals(b))
    sign = 1.0 if higher else -1.0
    return sign * (sa.mean - sb.mean), verdicts.pooled_spread(sa, sb)


def analyze_scaling(runs: list[Run], result: SectionResult, title: str) -> None:
    metric, higher = metric_of(runs)
    by_steps = {steps: ordered(group, ("sgd", *ARMS))
                for steps, group in sorted(group_by(runs, lambda r: r.spec.steps).items())}
    budgets = list(by_steps)
    beta2 = next((needs.beta2_of(r.spec) for r in runs if r.spec.optimizer == "radam"), 0.999)
    shares = {steps: needs.mean_rectification(steps, beta2 or 0.999) for steps in budgets}
    series = {name: {steps: finals(groups[name]) for steps, groups in by_steps.items()
                     if name in groups} for name in ARMS}
    gaps: dict[str, dict[int, tuple[float, float]]] = {}
    for name in ("radam", "adam-untuned"):
        gaps[f"{name} − adam"] = {steps: _gap(groups[name], groups["adam"], higher)
                                  for steps, groups in by_steps.items()
                                  if name in groups and "adam" in groups}
    rows = []
    for steps, groups in by_steps.items():
        gap, spread = gaps["radam − adam"].get(steps, (float("nan"), float("nan")))
        rows.append([str(steps), f"{shares[steps]:.2f}",
                     *(_cell(groups.get(name, [])) for name in ARMS),
                     f"{gap:+.4g} ± {spread:.2g}"])
    result.tables.append(Table(
        f"Final {metric} per budget, mean ± sd over seeds; RAdam − Adam is signed so that "
        "positive means RAdam is better (± the pooled seed spread)",
        ["steps", "RAdam's mean r_t", *ARMS, "RAdam − Adam"], rows))
    result.figures.append((
        f"Final {metric} and RAdam's advantage over Adam against the step budget, with "
        "RAdam's mean r_t over the run (dashed, right axis)",
        figures.png_bytes(figures.budget_scaling(series, gaps, shares, metric, title))))
    largest = by_steps[budgets[-1]]
    result.figures.append((
        f"Training curves at the largest budget, {budgets[-1]} steps (band: min-max)",
        figures.png_bytes(figures.curves(
            largest, [("train_loss", "training loss"), ("metric", metric)], title,
            log_y=(False, "perplexity" in metric)))))
    result.tables.append(summary_table(largest, metric, f"At the largest budget, {budgets[-1]} "
                                       "steps"))

    def group(name: str) -> list[Run]:
        return largest.get(name, [])

    result.verdicts.append(better_verdict(
        f"RAdam beats Adam (at {budgets[-1]} steps)", "radam", group("radam"), "adam",
        group("adam"), higher))
    if "sgd" in largest:
        result.verdicts.append(matches(
            f"RAdam does as well as SGD (at {budgets[-1]} steps)", "radam", group("radam"),
            "sgd", group("sgd"), higher))
    closes = matches(
        "RAdam's gap to Adam closes as the budget grows: at the largest budget RAdam does as "
        "well as Adam", "radam", group("radam"), "adam", group("adam"), higher)
    trend = ", ".join(f"{steps} steps {gap:+.3g}" for steps, (gap, _) in
                      gaps["radam − adam"].items())
    result.verdicts.append(verdicts.Verdict(
        closes.claim, closes.status, closes.rule,
        f"RAdam − Adam by budget: {trend}; at the largest: {closes.evidence}"))
    result.notes.append("Adam with the untuned warmup (linear over 2 / (1 - β2) steps) is the "
                        "'Adam with warmup' at every budget: its length needs no tuning.")


def _cell(runs: list[Run]) -> str:
    if not runs:
        return ""
    s = verdicts.stats(finals(runs))
    return f"{s.mean:.4g} ± {s.sd:.2g}"


def analyze_image(runs: list[Run], result: SectionResult) -> None:
    analyze_scaling(runs, result, runs[0].spec.task)
    result.tables.append(Table("The paper's Table 1 (test accuracy, %), for reference",
                               ["", "SGD", "Adam", "RAdam"],
                               [["CIFAR-10", "91.51", "90.54", "91.38"],
                                ["ImageNet", "69.86", "66.54", "67.62"]]))


def analyze_lstm(runs: list[Run], result: SectionResult) -> None:
    analyze_scaling(runs, result, "LSTM LM")


def analyze_digits(runs: list[Run], result: SectionResult) -> None:
    analyze_scaling(runs, result, runs[0].spec.task)


IMAGE = Section(
    "image", "Image classification: SGD vs Adam vs RAdam, by budget (Table 1, Figure 5)",
    "RAdam beats Adam on image classification and comes close to SGD.", image_specs,
    analyze_image)
LSTM = Section(
    "lstm", "LSTM language model: Adam vs RAdam, by budget (Figure 4)",
    "RAdam reaches a lower perplexity than Adam on an LSTM language model.", lstm_specs,
    analyze_lstm)
DIGITS = Section(
    "scaling", "Budget scaling on digits: does RAdam's gap to Adam close?",
    "Not a claim of the paper but this reproduction's explanation of its short runs: RAdam "
    "trails Adam at the same learning rate while r_t < 1, and the gap closes once the run is "
    "long enough for r_t to be near 1 for most of it.", digits_specs, analyze_digits)

