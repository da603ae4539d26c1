"""Whether what a step reuses from the last one is still there: the same objects, in order.

Kept between steps (the fused engine's plans, Lookahead's list of slow weights) is valid while
the parameter list and the state entries are the very objects it was made from. Identity, not
equality: a replaced tensor or state dict shows even when its values are equal, and comparing
identities costs no Python call per element (a tensor's hash or ``__eq__`` would).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from operator import is_
from typing import Any


def same_objects(current: Collection[Any], known: Sequence[Any]) -> bool:
    """Whether ``current`` holds exactly the objects of ``known``, in the same order."""
    return len(current) == len(known) and all(map(is_, current, known))
