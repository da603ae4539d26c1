"""What the Adam family shares: the moving moments, their bias corrections, the adaptive step.

    m_t = β1 m_{t-1} + (1 - β1) g_t                  (first moment)
    v_t = β2 v_{t-1} + (1 - β2) g_t²                 (second moment)
    m̂_t = m_t / (1 - β1^t),   v̂_t = v_t / (1 - β2^t) (bias corrections)

Adam, AdamW, AMSGrad, RAdam and AdaBound are these moments plus different scalars on top. The
whole step, from the gradient to the new parameter, is one named operation of
:class:`~rectified.rules.base.TensorListOps`, ``adam_step_``, whose meaning is
:func:`adam_step_` below: engines either run that composition or a loop of their own that
computes the same values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from rectified.rules.base import TensorList, TensorListOps, effective_gradients

# The sign of each moment the Adam family keeps (what a state format's code map must hold).
MOMENT_KINDS = {"exp_avg": "signed", "exp_avg_sq": "nonnegative", "max_exp_avg_sq": "nonnegative"}

# What an Adam-family step does to the parameter once the moments are updated.
ADAPTIVE = 0  # θ <- θ - step_size · m / (√v / denom_scale + ε)
MOMENTUM = 1  # θ <- θ - step_size · m            (RAdam's un-adapted steps)
NO_STEP = 2  # θ unchanged; the moments still accumulate


class BiasCorrections(NamedTuple):
    first: float  # 1 - β1^t
    second: float  # 1 - β2^t

    @property
    def second_sqrt(self) -> float:
        return math.sqrt(self.second)


def bias_corrections(step: int, beta1: float, beta2: float) -> BiasCorrections:
    """(1 - β1^t, 1 - β2^t) at step t >= 1."""
    return BiasCorrections(1 - beta1**step, 1 - beta2**step)


@dataclass(kw_only=True, slots=True)  # not frozen: a frozen __init__ costs 2 us a tensor
class MomentsStep:
    """The scalars every Adam-family step starts with, in their order of use: θ <- decay θ
    (decoupled weight decay); g' = -g under maximize; g' <- g' + λ θ (coupled decay, λ =
    ``weight_decay``); m, v the moments of g' with β1, β2; under AMSGrad v <- max(v_max, v)."""

    beta1: float
    beta2: float
    decay: float = 1.0
    maximize: bool = False
    weight_decay: float = 0.0


@dataclass(kw_only=True, slots=True)  # not frozen: a frozen __init__ costs 2 us a tensor
class AdamStep(MomentsStep):
    """The scalars of one ``adam_step_``: the moments, then the parameter step ``mode``."""

    step_size: float
    eps: float = 0.0
    denom_scale: float = 1.0
    mode: int = ADAPTIVE


def update_moments_(
    ops: TensorListOps,
    grads: TensorList,
    exp_avgs: TensorList,
    exp_avg_sqs: TensorList,
    beta1: float,
    beta2: float,
) -> None:
    """m <- β1 m + (1 - β1) g;  v <- β2 v + (1 - β2) g²."""
    ops.lerp_(exp_avgs, grads, 1 - beta1)
    ops.mul_(exp_avg_sqs, beta2)
    ops.addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)


def decayed_gradients_(
    ops: TensorListOps, params: TensorList, grads: TensorList, step: MomentsStep
) -> TensorList:
    """θ <- decay θ (decoupled weight decay); return the effective gradient g' (negated under
    maximize, plus λ θ for coupled decay)."""
    if step.decay != 1.0:
        ops.mul_(params, step.decay)
    return effective_gradients(
        ops, params, grads, maximize=step.maximize, weight_decay=step.weight_decay
    )


def gradients_and_moments_(
    ops: TensorListOps,
    params: TensorList,
    grads: TensorList,
    exp_avgs: TensorList,
    exp_avg_sqs: TensorList,
    max_exp_avg_sqs: TensorList | None,
    step: MomentsStep,
) -> TensorList:
    """Decay, the effective gradient and the moments; return the v that normalises the step
    (v_t, or max(v_1..v_t) under AMSGrad, Reddi et al.)."""
    grads = decayed_gradients_(ops, params, grads, step)
    update_moments_(ops, grads, exp_avgs, exp_avg_sqs, step.beta1, step.beta2)
    if max_exp_avg_sqs is None:
        return exp_avg_sqs
    ops.maximum_(max_exp_avg_sqs, exp_avg_sqs)
    return max_exp_avg_sqs


def adam_step_(
    ops: TensorListOps,
    params: TensorList,
    grads: TensorList,
    exp_avgs: TensorList,
    exp_avg_sqs: TensorList,
    max_exp_avg_sqs: TensorList | None,
    step: AdamStep,
) -> None:
    """The meaning of the named operation ``adam_step_``, in primitives."""
    second = gradients_and_moments_(
        ops, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, step
    )
    if step.mode == ADAPTIVE:
        denom = ops.sqrt(second)
        if step.denom_scale != 1.0:
            ops.div_(denom, step.denom_scale)
        ops.add_scalar_(denom, step.eps)
        ops.addcdiv_(params, exp_avgs, denom, -step.step_size)
    elif step.mode == MOMENTUM:
        ops.add_(params, exp_avgs, alpha=-step.step_size)
