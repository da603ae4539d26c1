"""What the Adam family shares: the moving moments, their bias corrections, the adaptive step.

    m_t = β1 m_{t-1} + (1 - β1) g_t                  (first moment)
    v_t = β2 v_{t-1} + (1 - β2) g_t²                 (second moment)
    m̂_t = m_t / (1 - β1^t),   v̂_t = v_t / (1 - β2^t) (bias corrections)

Adam, AdamW, AMSGrad, RAdam and AdaBound are these moments plus different scalars on top.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from rectified.rules.base import TensorList, TensorListOps


class BiasCorrections(NamedTuple):
    first: float  # 1 - β1^t
    second: float  # 1 - β2^t

    @property
    def second_sqrt(self) -> float:
        return math.sqrt(self.second)


def bias_corrections(step: int, beta1: float, beta2: float) -> BiasCorrections:
    """(1 - β1^t, 1 - β2^t) at step t >= 1."""
    return BiasCorrections(1 - beta1**step, 1 - beta2**step)


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


def second_moment_(ops: TensorListOps, exp_avg_sqs: TensorList, state: dict, amsgrad: bool):
    """The v that normalises the step: v_t, or max(v_1..v_t) under AMSGrad (Reddi et al.)."""
    if not amsgrad:
        return exp_avg_sqs
    max_exp_avg_sqs = state["max_exp_avg_sq"]
    ops.maximum_(max_exp_avg_sqs, exp_avg_sqs)
    return max_exp_avg_sqs


def adaptive_step_(
    ops: TensorListOps,
    params: TensorList,
    exp_avgs: TensorList,
    second: TensorList,
    *,
    step_size: float,
    eps: float,
    denom_scale: float = 1.0,
) -> None:
    """θ <- θ - step_size · m / (√v / denom_scale + ε)."""
    denom = ops.sqrt(second)
    if denom_scale != 1.0:
        ops.div_(denom, denom_scale)
    ops.add_scalar_(denom, eps)
    ops.addcdiv_(params, exp_avgs, denom, -step_size)
