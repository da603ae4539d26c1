"""The budget a claim needs before a run can test it.

RAdam takes the fraction r_t of Adam's step at update t (Liu et al., arXiv 1908.03265, Eq. 6);
r_t climbs from 0 to 1 over a few times 1 / (1 - β2) updates, and its *warmup period*
Σ_t (1 - r_t) is about 1 / (1 - β2): 1,033 updates for β2 = 0.999, the same as the untuned
warmups of Ma & Yarats (arXiv 1910.04209). A run much shorter than that compares Adam with an
RAdam that is still warming up; the paper's claims are about runs tens of times longer.

The need, :data:`MIN_SHARE` = 0.8, is stated on the *step share*: the mean over a run's updates of
the fraction of the full Adam step the run's recipe lets through (r_t for RAdam, the schedule's
multiplier for a warmup, 1 for plain Adam). Every claim on training runs needs, for every run
compared:

* the run long enough that RAdam's mean r_t over it (at the run's β2) is at least 0.8, about
  5 / (1 - β2) updates, whichever optimizer the run uses: a short run tests neither side;
* the run's own warmup, if it has one, passing at least 0.8 of the full step on average.

Adam-2k's claim also needs its longest v-only phase to reach 2 / (1 - β2) iterations, the
paper's 2,000 for β2 = 0.999 (:func:`second_moment_reach`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable

import numpy as np
import torch

import rectified
from rectified.experiments import recipes
from rectified.experiments.spec import RunSpec
from rectified.experiments.verdicts import Need

MIN_SHARE = 0.8
RECTIFIED = ("radam", "radamw", "ranger")  # recipes that apply r_t
NEED_STATEMENT = (f"every run long enough that RAdam's mean r_t over it is >= {MIN_SHARE:g} "
                  f"(about 5 / (1 - β2) steps), and any warmup in it passing >= {MIN_SHARE:g} of "
                  "the full step on average")


@functools.lru_cache(maxsize=256)
def _beta2(optimizer: str, options: str) -> float | None:
    built = recipes.build(optimizer, [torch.zeros(1, requires_grad=True)], 1e-3, 0,
                          json.loads(options))
    betas = built.optimizer.param_groups[0].get("betas")
    return None if betas is None else float(betas[1])


def beta2_of(spec: RunSpec) -> float | None:
    """β2 of the run's optimizer (None for optimizers without a second moment)."""
    return _beta2(spec.optimizer, json.dumps(spec.optimizer_options, sort_keys=True))


@functools.lru_cache(maxsize=256)
def mean_rectification(steps: int, beta2: float) -> float:
    """RAdam's mean r_t over updates 1..steps."""
    return float(np.mean([rectified.rectification_term(t, beta2) for t in range(1, steps + 1)]))


def step_shares(spec: RunSpec) -> np.ndarray:
    """The fraction of the full Adam step the run's recipe allows at each update 1..steps."""
    recipe = recipes.get_recipe(spec.optimizer)
    beta2 = beta2_of(spec)
    steps = range(1, spec.steps + 1)
    if spec.optimizer in RECTIFIED and beta2 is not None:
        return np.array([rectified.rectification_term(t, beta2) for t in steps])
    if recipe.uses_warmup == "linear" and spec.warmup:
        return np.minimum(np.arange(1, spec.steps + 1), spec.warmup) / spec.warmup
    if recipe.warmup_of_beta2 is not None and beta2 is not None:
        factor = recipe.warmup_of_beta2(beta2)
        return np.array([factor(t) for t in steps])
    return np.ones(spec.steps)


def mean_share(spec: RunSpec) -> float:
    return float(np.mean(step_shares(spec)))


def long_enough(specs: Iterable[RunSpec]) -> Need:
    """The need of every claim on training runs (module docstring), over the compared runs."""
    lengths: dict[tuple[int, float], float] = {}
    shares: dict[str, float] = {}
    for spec in specs:
        beta2 = beta2_of(spec)
        if beta2 is not None:
            lengths[(spec.steps, beta2)] = mean_rectification(spec.steps, beta2)
        if spec.optimizer not in RECTIFIED:
            label = spec.optimizer + (f" (warmup {spec.warmup})" if spec.warmup else "")
            shares[label] = min(shares.get(label, 1.0), mean_share(spec))
    if not lengths:
        return Need(False, NEED_STATEMENT, "no Adam-family run to measure the budget by")
    (steps, beta2), length = min(lengths.items(), key=lambda item: item[1])
    measured = f"mean r_t {length:.2f} over {steps} steps (β2 = {beta2:g})"
    short = {label: share for label, share in shares.items() if share < 1.0}
    if short:
        label = min(short, key=short.__getitem__)
        measured += f"; lowest mean warmup share {short[label]:.2f} ({label})"
    met = length >= MIN_SHARE and all(share >= MIN_SHARE for share in shares.values())
    return Need(met, NEED_STATEMENT, measured)


def second_moment_reach(specs: Iterable[RunSpec]) -> Need:
    """Adam-2k's need: its longest v-only phase reaches 2 / (1 - β2) iterations."""
    lengths = {(spec.warmup, beta2_of(spec)) for spec in specs if spec.optimizer == "adam-2k"}
    statement = "the longest v-only phase reaches 2 / (1 - β2) iterations"
    if not lengths:
        return Need(False, statement, "no adam-2k run")
    longest, beta2 = max(lengths, key=lambda item: item[0] or 0)
    target = round(2.0 / (1.0 - (beta2 or 0.999)))
    return Need((longest or 0) >= target, statement,
                f"longest v-only phase {longest} iterations, 2 / (1 - β2) = {target}")


def both(first: Need, second: Need) -> Need:
    """Both needs at once."""
    return Need(first.met and second.met, f"{first.statement}; and {second.statement}",
                f"{first.measured}; {second.measured}")
