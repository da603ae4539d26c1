"""Hyperparameter checks shared by the optimizers, with torch.optim's messages where it has one.

Each check raises ``ValueError`` naming the bad value and returns nothing, so optimizers can
validate a whole param group before they change anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def _value(x: Any) -> float:
    return float(x.item()) if isinstance(x, Tensor) else float(x)


def check_lr(lr: Any) -> None:
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    if not 0.0 <= _value(lr) < math.inf:
        raise ValueError(f"Invalid learning rate: {lr}")


def check_eps(eps: float) -> None:
    if not 0.0 <= eps < math.inf:
        raise ValueError(f"Invalid epsilon value: {eps}")


def check_weight_decay(weight_decay: float) -> None:
    if not 0.0 <= weight_decay < math.inf:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")


def check_betas(betas: Sequence[Any]) -> None:
    if not isinstance(betas, Sequence) or len(betas) != 2:
        raise ValueError(f"Invalid betas: expected a pair (beta1, beta2), got {betas!r}")
    for index, beta in enumerate(betas):
        if isinstance(beta, Tensor) and beta.numel() != 1:
            raise ValueError(f"Tensor betas[{index}] must be 1-element")
        if not 0.0 <= _value(beta) < 1.0:
            raise ValueError(f"Invalid beta parameter at index {index}: {beta}")


def check_in_range(
    name: str, value: float, low: float, high: float, *, low_open: bool = False,
    high_open: bool = True,
) -> None:
    """``low <= value < high`` by default; ``low_open``/``high_open`` choose strictness."""
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (above and below):
        raise ValueError(f"Invalid {name} value: {value}")


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"Invalid {name} value: {value!r} (expected True or False)")


STATE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_state_dtype(dtype: Any) -> None:
    """``state_dtype``: None (the parameter's dtype) or one of :data:`STATE_DTYPES`."""
    if dtype is not None and dtype not in STATE_DTYPES:
        raise ValueError(
            f"Invalid state_dtype: {dtype!r} (expected None, torch.float16, torch.bfloat16, "
            "torch.float32 or torch.float64)"
        )
