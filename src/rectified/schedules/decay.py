"""Time-dependent decays (seed 002, "Learning rate schedules"), as functions of the step.

With s = max(t - 1, 0) the updates made before update t (see :mod:`rectified.schedules.base`):

    constant            c
    piecewise_constant  v_i  for b_i < t <= b_{i+1}            (b_0 = 0, b_{n+1} = inf)
    step_decay          lr0 · γ^⌊s / k⌋
    exponential_decay   lr0 · d^(s / T)
    reciprocal_decay    lr0 / (1 + s / c)
    cosine_annealing    lr_min + (lr0 - lr_min) (1 + cos(π min(s, T) / T)) / 2
    cosine_restarts     the same within each cycle of SGDR (Loshchilov & Hutter, arXiv 1608.03983):
                        cycle i has length T_i = T · m^i and s_cur counts from its start

Values are in the unit of ``lr0`` (and ``lr_min``): with the default ``lr0=1`` they are
multipliers of the optimizer's learning rate, which is how :class:`ScheduleLR` applies them.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence

from rectified.schedules.base import StepSchedule, elapsed
from rectified.schedules.validation import check_increasing_steps, check_int, check_real


def _check_lr0(lr0: float) -> float:
    return check_real("lr0", lr0, 0.0, low_open=True)


def _check_lr_min(lr_min: float) -> float:
    return check_real("lr_min", lr_min, 0.0)


class Constant(StepSchedule):
    """c at every step."""

    name = "constant"
    fields = ("level",)

    def __init__(self, value: float = 1.0) -> None:
        self.level = check_real("value", value, 0.0)

    def arguments(self) -> dict[str, float]:
        return {"value": self.level}

    def value(self, step: int) -> float:
        return self.level


class PiecewiseConstant(StepSchedule):
    """``values[i]`` for boundaries[i-1] < t <= boundaries[i]: the first ``boundaries[0]``
    updates use ``values[0]``, and so on (torch's MultiStepLR with milestones = boundaries)."""

    name = "piecewise_constant"
    fields = ("boundaries", "values")

    def __init__(self, boundaries: Sequence[int], values: Sequence[float]) -> None:
        self.boundaries = list(check_increasing_steps("boundaries", boundaries))
        if isinstance(values, str) or not isinstance(values, Sequence):
            raise ValueError(f"Invalid values value: {values!r} (expected a sequence of numbers)")
        if len(values) != len(self.boundaries) + 1:
            raise ValueError(
                f"Invalid values value: {list(values)!r} (expected {len(self.boundaries) + 1} "
                f"values for {len(self.boundaries)} boundaries)"
            )
        self.values = [check_real(f"values[{i}]", v, 0.0) for i, v in enumerate(values)]

    def value(self, step: int) -> float:
        return self.values[bisect_left(self.boundaries, step)]


class StepDecay(StepSchedule):
    """lr0 · γ^⌊s / k⌋: multiplied by γ every ``step_size`` updates (torch's StepLR)."""

    name = "step_decay"
    fields = ("step_size", "gamma", "lr0")

    def __init__(self, step_size: int, gamma: float = 0.1, lr0: float = 1.0) -> None:
        self.step_size = check_int("step_size", step_size, 1)
        self.gamma = check_real("gamma", gamma, 0.0, 1.0, low_open=True)
        self.lr0 = _check_lr0(lr0)

    def value(self, step: int) -> float:
        return self.lr0 * self.gamma ** (elapsed(step) // self.step_size)


class ExponentialDecay(StepSchedule):
    """lr0 · d^(s / T): multiplied by ``decay`` every ``decay_steps`` updates, smoothly
    (torch's ExponentialLR with γ = d when T = 1)."""

    name = "exponential_decay"
    fields = ("decay", "decay_steps", "lr0")

    def __init__(self, decay: float, decay_steps: int = 1, lr0: float = 1.0) -> None:
        self.decay = check_real("decay", decay, 0.0, 1.0, low_open=True)
        self.decay_steps = check_int("decay_steps", decay_steps, 1)
        self.lr0 = _check_lr0(lr0)

    def value(self, step: int) -> float:
        return self.lr0 * self.decay ** (elapsed(step) / self.decay_steps)


class ReciprocalDecay(StepSchedule):
    """lr0 / (1 + s / c): inverse-time decay, halved after c updates (the seed takes c ~ 1)."""

    name = "reciprocal_decay"
    fields = ("c", "lr0")

    def __init__(self, c: float, lr0: float = 1.0) -> None:
        self.c = check_real("c", c, 0.0, low_open=True)
        self.lr0 = _check_lr0(lr0)

    def value(self, step: int) -> float:
        return self.lr0 / (1.0 + elapsed(step) / self.c)


def _cosine(lr0: float, lr_min: float, position: float, length: float) -> float:
    return lr_min + (lr0 - lr_min) * (1.0 + math.cos(math.pi * position / length)) / 2.0


class CosineAnnealing(StepSchedule):
    """lr_min + (lr0 - lr_min) (1 + cos(π min(s, T) / T)) / 2: from lr0 at the first update to
    lr_min after ``decay_steps`` more, then held at lr_min.

    torch's CosineAnnealingLR(T_max=T, eta_min) equals it for s <= T; past T torch's cosine
    rises again (period 2T), this one stays at lr_min.
    """

    name = "cosine_annealing"
    fields = ("decay_steps", "lr_min", "lr0")

    def __init__(self, decay_steps: int, lr_min: float = 0.0, lr0: float = 1.0) -> None:
        self.decay_steps = check_int("decay_steps", decay_steps, 1)
        self.lr_min = _check_lr_min(lr_min)
        self.lr0 = _check_lr0(lr0)

    def value(self, step: int) -> float:
        position = min(elapsed(step), self.decay_steps)
        return _cosine(self.lr0, self.lr_min, position, self.decay_steps)


class CosineRestarts(StepSchedule):
    """SGDR: cosine annealing from lr0 to lr_min restarted at lr0 after each cycle; cycle i
    lasts T · m^i updates (torch's CosineAnnealingWarmRestarts(T_0=T, T_mult=m, eta_min))."""

    name = "cosine_restarts"
    fields = ("period", "period_mult", "lr_min", "lr0")

    def __init__(
        self, period: int, period_mult: int = 1, lr_min: float = 0.0, lr0: float = 1.0
    ) -> None:
        self.period = check_int("period", period, 1)
        self.period_mult = check_int("period_mult", period_mult, 1)
        self.lr_min = _check_lr_min(lr_min)
        self.lr0 = _check_lr0(lr0)

    def cycle(self, step: int) -> tuple[int, int]:
        """(position in the current cycle, length of the current cycle) at step t."""
        s = elapsed(step)
        if self.period_mult == 1:
            return s % self.period, self.period
        start, length = 0, self.period
        while s >= start + length:
            start += length
            length *= self.period_mult
        return s - start, length

    def value(self, step: int) -> float:
        position, length = self.cycle(step)
        return _cosine(self.lr0, self.lr_min, position, length)


constant = Constant
piecewise_constant = PiecewiseConstant
step_decay = StepDecay
exponential_decay = ExponentialDecay
reciprocal_decay = ReciprocalDecay
cosine_annealing = CosineAnnealing
cosine_restarts = CosineRestarts
