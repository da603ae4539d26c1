"""The paper's Adam-2k (Liu et al., arXiv 1908.03265, Section 3.2, Figure 3).

Before ordinary Adam training, W extra iterations update only the second moment v, with the
parameters and m frozen, so that the adaptive learning rate has seen W gradients before the first
real update. The paper uses W = 2,000 with β2 = 0.999, i.e. 2 / (1 - β2); here W runs over
several lengths up to 2 / (1 - β2) on the Transformer task where Adam without warmup fails. If
some length rescues Adam, the lack of samples of v (its variance) explains the failure.
"""

from __future__ import annotations

import rectified
from rectified.experiments import figures, needs, verdicts
from rectified.experiments.budgets import Budget
from rectified.experiments.records import Run, group_by
from rectified.experiments.sections.common import (
    Section,
    SectionResult,
    Table,
    cell,
    finals,
    mean_over,
    metric_of,
    specs_of,
    summary_table,
)
from rectified.experiments.spec import RunSpec


def specs(b: Budget) -> list[RunSpec]:
    setup = b.transformer
    runs = [setup.spec("adam", seed) for seed in b.seeds]
    runs += [setup.spec("adam-warmup", seed, warmup=b.transformer_warmup) for seed in b.seeds]
    runs += [setup.spec("adam-2k", seed, warmup=length)
             for length in b.second_moment_lengths for seed in b.seeds]
    return runs


def analyze(runs: list[Run], result: SectionResult) -> None:
    metric, higher = metric_of(runs)
    by_recipe = group_by(runs, lambda r: r.spec.optimizer)
    adam, warm = by_recipe.get("adam", []), by_recipe.get("adam-warmup", [])
    lengths = group_by(by_recipe.get("adam-2k", []), lambda r: r.spec.warmup)
    groups: dict[str, list[Run]] = {"adam": adam} if adam else {}
    if warm:
        groups[f"adam-warmup {warm[0].spec.warmup}"] = warm
    groups.update({f"adam-2k {length}": lengths[length] for length in sorted(lengths)})
    result.tables.append(summary_table(groups, metric, "Final numbers, mean ± sd over seeds "
                                       "(adam-2k W: W extra v-only iterations first)"))
    result.figures.append((
        "Training loss and validation perplexity for each length of the v-only phase "
        "(mean over seeds, band: min-max; Figure 3 analogue)",
        figures.png_bytes(figures.curves(groups, [("train_loss", "training loss"),
                                                  ("metric", metric)],
                                         "Adam-2k: v-only iterations before training",
                                         log_y=(False, True)))))
    if not lengths:
        result.notes.append("No adam-2k runs.")
        return
    beta2 = needs.beta2_of(runs[0].spec) or 0.999
    need = needs.both(needs.long_enough(specs_of(runs)), needs.second_moment_reach(specs_of(runs)))
    rows = []
    for length in sorted(lengths):
        versus = verdicts.better(f"adam-2k {length} beats adam", f"adam-2k {length}",
                                 finals(lengths[length]), "adam", finals(adam), higher)
        rows.append([str(length), f"{rectified.rho_t(length, beta2):.1f}",
                     cell(finals(lengths[length])), versus.status])
    result.tables.append(Table(
        f"Each length against plain Adam (ρ after W samples, out of ρ∞ = "
        f"{rectified.rho_inf(beta2):.0f}; 'A beats B' rule, before the budget need)",
        ["v-only iterations W", "ρ_W", f"final {metric}", "beats plain Adam"], rows))
    pick = max if higher else min
    best = pick(sorted(lengths), key=lambda length: mean_over(finals(lengths[length])))
    name = f"adam-2k {best}"
    beats = verdicts.gated(verdicts.better(
        f"Some v-only length up to 2/(1-β2) makes Adam beat plain Adam (best: {best})", name,
        finals(lengths[best]), "adam", finals(adam), higher), need)
    as_well = verdicts.gated(verdicts.matches(
        "... and does as well as Adam with warmup", name, finals(lengths[best]),
        "adam-warmup", finals(warm), higher), need)
    result.verdicts += [beats, verdicts.all_of(
        f"Some v-only length up to 2/(1-β2) = {round(2 / (1 - beta2))} rescues Adam: it beats "
        "plain Adam and does as well as Adam with warmup", [beats, as_well],
        "both parts reproduced, for the best length")]
    result.notes.append(
        f"The v-only iterations are extra: every run then trains for {runs[0].spec.steps} "
        "steps. They read the batches after the run's last step. m is 0 when training starts "
        "and its bias correction counts real updates only; v's counts all samples.")


CLAIM = ("Adam fails without warmup because its adaptive learning rate has too few samples at "
         "first; updating only v for 2 / (1 - β2) extra iterations (the paper's Adam-2k, 2,000 "
         "for β2 = 0.999) before training removes the failure.")
SECTION = Section("adam2k", "Adam-2k: v-only iterations before training (Section 3.2)",
                  CLAIM, specs, analyze)
