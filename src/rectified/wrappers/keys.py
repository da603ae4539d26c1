"""Where a Lookahead keeps its hyperparameters, counter and slow weights, and their checks.

The keys live in the inner optimizer's param groups and in each parameter's state entry, so
each level of nesting has its own: ``Lookahead(opt)`` (level 1) uses ``lookahead_k``,
``lookahead_alpha``, ``lookahead_step`` and ``slow_param``; ``Lookahead(Lookahead(opt))`` adds
level 2, ``lookahead2_k``, ``lookahead2_alpha``, ``lookahead2_step`` and ``slow_param2``, and so
on. Level 1 keeps the unnumbered names, so its checkpoints are the ones saved before nesting
was supported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Matches the group and state keys of any level: group 1 the level digits (empty for 1).
LEVEL_KEY = re.compile(r"^(?:lookahead(\d*)_(?:k|alpha|step)|slow_param(\d*))$")


@dataclass(frozen=True)
class LookaheadKeys:
    """The group keys (``k``, ``alpha``, ``counter``) and state key (``slow``) of one level."""

    level: int
    k: str
    alpha: str
    counter: str
    slow: str

    @property
    def group_keys(self) -> tuple[str, str, str]:
        return (self.k, self.alpha, self.counter)


def keys_for(level: int) -> LookaheadKeys:
    suffix = "" if level == 1 else str(level)
    prefix = f"lookahead{suffix}_"
    return LookaheadKeys(level, prefix + "k", prefix + "alpha", prefix + "step",
                         "slow_param" + suffix)


def level_of_key(key: Any) -> int | None:
    """The nesting level a group or state key belongs to, or None for any other key."""
    match = LEVEL_KEY.match(key) if isinstance(key, str) else None
    if match is None:
        return None
    digits = match.group(1) or match.group(2)
    return int(digits) if digits else 1


def check_k(k: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"Invalid k value: {k!r} (expected an integer >= 1)")


def check_alpha(alpha: Any) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"Invalid alpha value: {alpha!r} (expected 0 <= alpha <= 1)")


def check_counter(counter: Any) -> None:
    if isinstance(counter, bool) or not isinstance(counter, int) or counter < 0:
        raise ValueError(f"Invalid step counter: {counter!r} (expected an integer >= 0)")
