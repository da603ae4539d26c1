"""Learning-rate schedules: pure functions of the step, joined, and torch schedulers.

A schedule maps t, the index of the optimizer update counted from 1 (as Adam and RAdam count),
to a learning rate or a multiplier of it; :class:`ScheduleLR` applies one to any optimizer and
:class:`ReduceOnPlateau` reduces the lr when a metric stops improving. See ``docs/schedules.md``.
"""

from rectified.schedules.adapter import ScheduleLR
from rectified.schedules.base import Schedule, StepSchedule
from rectified.schedules.decay import (
    Constant,
    CosineAnnealing,
    CosineRestarts,
    ExponentialDecay,
    PiecewiseConstant,
    ReciprocalDecay,
    StepDecay,
    constant,
    cosine_annealing,
    cosine_restarts,
    exponential_decay,
    piecewise_constant,
    reciprocal_decay,
    step_decay,
)
from rectified.schedules.join import Join, join, sequence
from rectified.schedules.plateau import PlateauSchedule, ReduceOnPlateau
from rectified.schedules.plot import plot
from rectified.schedules.warmup import (
    ExponentialWarmup,
    LinearWarmup,
    RAdamWarmup,
    UntunedWarmup,
    exponential_warmup,
    linear_warmup,
    radam_warmup,
    untuned_warmup,
)

__all__ = [
    "Constant",
    "CosineAnnealing",
    "CosineRestarts",
    "ExponentialDecay",
    "ExponentialWarmup",
    "Join",
    "LinearWarmup",
    "PiecewiseConstant",
    "PlateauSchedule",
    "RAdamWarmup",
    "ReciprocalDecay",
    "ReduceOnPlateau",
    "Schedule",
    "ScheduleLR",
    "StepDecay",
    "StepSchedule",
    "UntunedWarmup",
    "constant",
    "cosine_annealing",
    "cosine_restarts",
    "exponential_decay",
    "exponential_warmup",
    "join",
    "linear_warmup",
    "piecewise_constant",
    "plot",
    "radam_warmup",
    "reciprocal_decay",
    "sequence",
    "step_decay",
    "untuned_warmup",
]
