"""Engines: how one update rule is executed over a param group.

* ``reference``: the rule runs once per parameter, with plain tensor ops (:mod:`.reference`).
* ``foreach``: the rule runs once per bucket of parameters that share device, dtype and step
  count, with ``torch._foreach_*`` ops (:mod:`.foreach`).

Both call the same :meth:`~rectified.rules.base.UpdateRule.update_`, so they agree up to float
rounding; the tests hold them equal in float64.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from rectified.engines.foreach import FOREACH
from rectified.engines.reference import PER_TENSOR
from rectified.rules.base import UpdateRule

ENGINES = ("reference", "foreach")


def engine_for(group: Mapping[str, Any]) -> str:
    """The engine a group asks for through ``foreach`` (None picks foreach)."""
    return "reference" if group.get("foreach") is False else "foreach"


def _real(tensor: Tensor) -> Tensor:
    return torch.view_as_real(tensor) if tensor.is_complex() else tensor


def apply_rule(
    engine: str,
    rule: UpdateRule,
    group: Mapping[str, Any],
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    states: Sequence[Mapping[str, Tensor]],
    steps: Sequence[int],
) -> None:
    """Run ``rule`` on ``params`` with ``engine``; ``steps[i]`` is param i's new step count."""
    keys = rule.state_keys(group)
    params = [_real(p) for p in params]
    grads = [_real(g) for g in grads]
    tensors = [{k: _real(s[k]) for k in keys} for s in states]
    if engine == "reference":
        for p, g, s, step in zip(params, grads, tensors, steps):
            rule.update_(PER_TENSOR, [p], [g], {k: [s[k]] for k in keys}, group, step)
    elif engine == "foreach":
        buckets: dict[tuple, list[int]] = defaultdict(list)
        for i, (p, step) in enumerate(zip(params, steps)):
            buckets[(p.device, p.dtype, step)].append(i)
        for (_, _, step), index in buckets.items():
            rule.update_(
                FOREACH,
                [params[i] for i in index],
                [grads[i] for i in index],
                {k: [tensors[i][k] for i in index] for k in keys},
                group,
                step,
            )
    else:
        raise ValueError(f"Unknown engine: {engine!r} (expected one of {ENGINES})")
