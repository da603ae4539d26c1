"""Argument checks of the schedules: each raises ``ValueError`` naming the bad value."""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any


def check_int(name: str, value: Any, minimum: int) -> int:
    """An integer (not a bool) >= ``minimum``, returned as a plain ``int``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"Invalid {name} value: {value!r} (expected an integer >= {minimum})")
    return int(value)


def check_real(
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real number in [low, high] (bounds made strict by ``low_open``/``high_open``)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"Invalid {name} value: {value!r} (expected a finite number)")
    x = float(value)
    above = x > low if low_open else x >= low
    below = x < high if high_open else x <= high
    if not (above and below):
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        interval = f"{left}{low}, {high}{right}"
        raise ValueError(f"Invalid {name} value: {value!r} (expected a number in {interval})")
    return x


def check_increasing_steps(name: str, values: Any) -> tuple[int, ...]:
    """A sequence of strictly increasing integers >= 1 (boundaries between pieces)."""
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise ValueError(f"Invalid {name} value: {values!r} (expected a sequence of integers)")
    steps = tuple(check_int(f"{name}[{i}]", v, 1) for i, v in enumerate(values))
    for i in range(1, len(steps)):
        if steps[i] <= steps[i - 1]:
            raise ValueError(f"Invalid {name} value: {list(steps)} (expected strictly increasing)")
    return steps


def check_step(step: Any) -> int:
    """The argument of a schedule: an integer step >= 0."""
    return check_int("step", step, 0)
