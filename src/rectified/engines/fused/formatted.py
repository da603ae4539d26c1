"""Adam-family steps over stored moments in one kernel pass (``csrc/formats.h``): the fused
engine's path for groups with ``state_format="8bit"`` or ``"bfloat16"``.

A parameter takes it when its step is one ``adam_step_`` or ``bounded_step_`` (Adam, AdamW,
AMSGrad, RAdam, AdaBound, AMSBound; not NAdam, whose step is a composition of primitives), it
is a plain contiguous float32 or bfloat16 CPU tensor with a gradient of its dtype, and its
moments are already stored in the format (the first step, which makes them, runs through the
general path). The kernel decodes, steps and encodes each block of 256 while it is in cache;
the random bits and codes are those of :mod:`rectified.formats`, so the result is the general
path's (load, the kernel's loop for the operation, store) to the last bit, which the tests
check. The kernel is a library of its own, built on the first step that needs it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from rectified import formats
from rectified.engines.engine import update
from rectified.engines.fused import kernel
from rectified.engines.fused.program import instructions, trace
from rectified.engines.tensors import Slots, overlapping, select
from rectified.rules.base import UpdateRule

DTYPES = (torch.float32, torch.bfloat16)


def _stored_as(entry: Mapping[str, Any], keys: Sequence[str], encoded: str) -> bool:
    """Whether every moment of ``entry`` is already stored in ``encoded`` (the kernel checks
    the rest, layout and sizes, before it writes anything)."""
    if encoded == "8bit":
        return all(getattr(entry.get(key), "dtype", None) is torch.uint8
                   and formats.scales_key(key) in entry for key in keys)
    return all(getattr(entry.get(key), "dtype", None) is torch.bfloat16
               and formats.scales_key(key) not in entry for key in keys)


def _one_step(rule: UpdateRule, group: Mapping[str, Any], keys: Sequence[str],
              n_slots: int, count: int) -> tuple[str, tuple[float, ...]] | None:
    """(operation, scalars) of the group's step at ``count`` if it is exactly one
    ``adam_step_`` or ``bounded_step_`` over the input slots in order (params, grads, m, v[,
    max])."""
    def body(ops, *lists) -> None:
        update(rule, ops, group, keys, list(lists), count)

    code = instructions(trace(body, n_slots))
    if len(code) != 1 or code[0][0] not in ("adam_step_", "bounded_step_"):
        return None
    registers = tuple(r for r in code[0][1] if r != -1)
    return (code[0][0], code[0][2]) if registers == tuple(range(n_slots)) else None


def run_(rule: UpdateRule, group: Mapping[str, Any], keys: Sequence[str], slots: Slots,
         entries: Sequence[dict[str, Any]], counts: Sequence[int],
         storage: formats.Storage) -> list[int]:
    """Step the parameters the kernel takes; return the indices of the others, untouched."""
    n = len(slots[0])
    if not kernel.is_loaded() or list(keys) not in (["exp_avg", "exp_avg_sq"],
                                                    ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]):
        return list(range(n))
    calls: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    if not any(storage.encoded(p) for p in slots[0]) or not kernel.load_formats():
        return list(range(n))
    left = []
    for i, (p, g) in enumerate(zip(slots[0], slots[1])):
        encoded = storage.encoded(p)
        if (encoded is None or p.dtype not in DTYPES or g.dtype is not p.dtype or not p.is_cpu
                or not _stored_as(entries[i], keys, encoded)):
            left.append(i)
            continue
        calls[(counts[i], encoded, p.dtype, storage.rounds_stochastically(p))].append(i)
    positions = {id(p): i for i, p in enumerate(group["params"])}
    for (count, encoded, _, stochastic), index in calls.items():
        operation = _one_step(rule, group, keys, len(slots), count)
        shared = set(overlapping(select(slots, index), (1,))) if operation is not None else set()
        if operation is None or shared:
            left += [index[j] for j in shared] if operation is not None else index
            index = [i for j, i in enumerate(index) if j not in shared]
            if operation is None or not index:
                continue
        eight_bit = encoded == "8bit"
        moments = [entries[i][key] for i in index for key in keys]
        scales = [entries[i][formats.scales_key(key)] for i in index for key in keys] \
            if eight_bit else []
        try:
            kernel.formatted_step_(
                operation[0], [slots[0][i] for i in index], [slots[1][i] for i in index],
                moments, scales, len(keys), eight_bit, stochastic, storage.seed, count,
                [positions.get(id(slots[0][i]), i) for i in index], operation[1])
        except RuntimeError:  # a tensor it cannot read (a view, a subclass): nothing was written
            left += index
    return sorted(left)



