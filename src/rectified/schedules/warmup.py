"""Warmups: multipliers that rise from 0 to 1 over the first updates, written in the update's
own index t (t = 1 for the first update, as RAdam counts; step 0 gives 0 and is never applied by
:class:`~rectified.schedules.ScheduleLR`).

    linear_warmup       min(t, T_w) / T_w                    (seed 004: α_t = t α_0 for t < T_w)
    exponential_warmup  1 - exp(-t / τ)
    radam_warmup        r_t of RAdam, 0 where ρ_t <= threshold (Liu et al., arXiv 1908.03265)
    untuned_warmup      min(1, t (1 - β2) / 2): linear over 2 / (1 - β2) updates
                        (Ma & Yarats, "On the adequacy of untuned warmup for adaptive
                        optimization", arXiv 1910.04209)

Through :class:`ScheduleLR`, ``linear_warmup(T_w)`` gives the same learning rates as torch's
``LinearLR(start_factor=1 / T_w, end_factor=1.0, total_iters=T_w - 1)``: 1/T_w at the first
update, 1 from update T_w on.
"""

from __future__ import annotations

import math

from rectified.rules.radam import DEFAULT_THRESHOLD, PAPER_THRESHOLD, rectification_term
from rectified.schedules.base import StepSchedule
from rectified.schedules.validation import check_int, check_real


def _check_beta2(beta2: float) -> float:
    return check_real("beta2", beta2, 0.0, 1.0, high_open=True)


class LinearWarmup(StepSchedule):
    """min(t, T_w) / T_w: 1/T_w at the first update, 1 from update T_w on."""

    name = "linear_warmup"
    fields = ("warmup_steps",)

    def __init__(self, warmup_steps: int) -> None:
        self.warmup_steps = check_int("warmup_steps", warmup_steps, 1)

    def value(self, step: int) -> float:
        return min(step, self.warmup_steps) / self.warmup_steps


class ExponentialWarmup(StepSchedule):
    """1 - exp(-t / τ): reaches 1 - 1/e after τ updates."""

    name = "exponential_warmup"
    fields = ("tau",)

    def __init__(self, tau: float) -> None:
        self.tau = check_real("tau", tau, 0.0, low_open=True)

    def value(self, step: int) -> float:
        return -math.expm1(-step / self.tau)


class RAdamWarmup(StepSchedule):
    """r_t, the rectification term RAdam applies at its t-th update (0 while ρ_t <= threshold).

    It calls :func:`rectified.rules.radam.rectification_term`, the definition the optimizer
    uses, so Adam with this schedule and ε = 0 takes RAdam's steps (with
    ``degenerated_to_sgd=False``, where RAdam makes no step below the threshold).
    """

    name = "radam_warmup"
    fields = ("beta2", "threshold")

    def __init__(self, beta2: float = 0.999, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.beta2 = _check_beta2(beta2)
        self.threshold = check_real("threshold", threshold, PAPER_THRESHOLD)

    def value(self, step: int) -> float:
        if step == 0:
            return 0.0
        return rectification_term(step, self.beta2, self.threshold)


class UntunedWarmup(StepSchedule):
    """min(1, t (1 - β2) / 2): linear warmup over 2 / (1 - β2) updates (2000 for β2 = 0.999)."""

    name = "untuned_warmup"
    fields = ("beta2",)

    def __init__(self, beta2: float = 0.999) -> None:
        self.beta2 = _check_beta2(beta2)

    @property
    def warmup_steps(self) -> float:
        return 2.0 / (1.0 - self.beta2)

    def value(self, step: int) -> float:
        return min(1.0, step * (1.0 - self.beta2) / 2.0)


linear_warmup = LinearWarmup
exponential_warmup = ExponentialWarmup
radam_warmup = RAdamWarmup
untuned_warmup = UntunedWarmup
