"""Engines: how one update rule is executed over a param group.

* ``reference``: the rule runs once per parameter, with plain tensor ops (:mod:`.reference`).
* ``foreach``: the rule runs once per bucket of parameters that share device, dtype and step
  count, with ``torch._foreach_*`` ops (:mod:`.foreach`).
* ``fused``: the rule is traced into an elementwise program that one C++ kernel runs over a
  whole bucket in a single pass (:mod:`.fused`, CPU); on CUDA an Adam step of the program is
  handed to torch's fused Adam kernels (:mod:`.torch_fused`), and anything else runs foreach.

All call the same :meth:`~rectified.rules.base.UpdateRule.update_`, so they agree up to float
rounding; the tests hold them equal.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from rectified.engines import fused, torch_fused
from rectified.engines.foreach import FOREACH
from rectified.engines.reference import PER_TENSOR
from rectified.rules.base import UpdateRule

try:
    from torch.distributed.tensor import DTensor
except ImportError:  # torch built without distributed support
    DTensor = None

ENGINES = ("reference", "foreach", "fused")


def engine_for(group: Mapping[str, Any]) -> str:
    """The engine a group asks for through ``fused`` and ``foreach``.

    ``fused=True`` runs fused (compiling the kernel on first use; if that is impossible, warns
    once and runs foreach). ``foreach=False`` runs the reference engine. With both None, a group
    whose optimizer offers ``fused`` runs fused when the kernel is already built (see
    :mod:`rectified.engines.extension`); everything else runs foreach.
    """
    if group.get("fused"):
        return "fused" if fused.available(build_if_missing=True) else "foreach"
    if group.get("foreach") is False:
        return "reference"
    auto = "fused" in group and group["fused"] is None and group.get("foreach") is None
    return "fused" if auto and fused.available() else "foreach"


def check_engine(group: Mapping[str, Any], params: Sequence[Tensor]) -> None:
    """Raise ``RuntimeError`` if ``fused=True`` is asked for tensors it cannot run."""
    if group.get("fused") and not all(p.is_cpu or p.is_cuda for p in params):
        devices = sorted({p.device.type for p in params} - {"cpu", "cuda"})
        raise RuntimeError(
            f"fused=True supports CPU and CUDA tensors only, got tensors on "
            f"{', '.join(devices)}; use fused=None or foreach=True there"
        )


def _real(tensor: Tensor) -> Tensor:
    return torch.view_as_real(tensor) if tensor.is_complex() else tensor


def is_distributed(tensor: Tensor) -> bool:
    return DTensor is not None and isinstance(tensor, DTensor)


def _local(tensors: Sequence[Tensor]) -> list[Tensor] | None:
    """The local shards of one parameter's DTensors (parameter, gradient, state), or None.

    An update rule is elementwise, so running it on the local shards is the same as running it
    on the DTensors, provided every tensor is laid out alike: same mesh, same placements, none
    partial (pending a reduction). Otherwise the DTensors are left to their own dispatch.
    """
    first = tensors[0]
    if not all(is_distributed(t) for t in tensors):
        return None
    layout = (first.device_mesh, tuple(first.placements))
    if any(p.is_partial() for p in first.placements) or any(
        (t.device_mesh, tuple(t.placements)) != layout for t in tensors
    ):
        return None
    return [t.to_local() for t in tensors]


def as_local(slots: list[list[Tensor]]) -> tuple[list[list[Tensor]], bool]:
    """Slots with DTensors replaced by their local shards where that is exact; and whether any
    DTensor is left."""
    if not any(is_distributed(p) for p in slots[0]):
        return slots, False
    columns, left = [], False
    for column in zip(*slots):
        local = _local(column)
        left |= local is None
        columns.append(list(column) if local is None else local)
    return [list(row) for row in zip(*columns)], left


def _buckets(params: Sequence[Tensor], steps: Sequence[int], by_device: bool) -> dict:
    """Indices of the params that share a key: (device, dtype, step) for foreach, and for the
    fused kernel (which takes any device and dtype mix) (float64 or not, step)."""
    if by_device:
        keys = [(p.device, p.dtype, step) for p, step in zip(params, steps)]
    else:
        keys = [(p.dtype is torch.float64, step) for p, step in zip(params, steps)]
    if len(set(keys)) == 1:
        return {keys[0]: list(range(len(keys)))}
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        buckets[key].append(i)
    return buckets


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
    if engine not in ENGINES:
        raise ValueError(f"Unknown engine: {engine!r} (expected one of {ENGINES})")
    keys = rule.state_keys(group)
    slots = [list(params), list(grads), *([s[k] for s in states] for k in keys)]
    slots, distributed_left = as_local(slots)
    if distributed_left and engine == "fused":  # the kernel takes plain tensors only
        engine = "foreach"
    if any(p.is_complex() for p in slots[0]):  # then their grads and state are complex too
        slots = [[_real(x) for x in xs] for xs in slots]
    if engine == "reference":
        slots, write_back = in_state_dtype(slots)
        for i, step in enumerate(steps):
            _update(rule, PER_TENSOR, group, keys, [[xs[i]] for xs in slots], step)
        _write_back(write_back)
    elif engine == "foreach":
        _apply_foreach(rule, group, keys, slots, steps)
    else:
        _apply_fused(rule, group, keys, slots, steps)


def _update(rule, ops, group, keys, slots, step) -> None:
    params, grads, *state = slots
    rule.update_(ops, params, grads, dict(zip(keys, state)), group, step)


def _select(slots: list[list[Tensor]], index: Sequence[int]) -> list[list[Tensor]]:
    if len(index) == len(slots[0]) and list(index) == list(range(len(index))):
        return slots
    return [[xs[i] for i in index] for xs in slots]


def in_state_dtype(slots: list[list[Tensor]]) -> tuple[list[list[Tensor]], list]:
    """Slots where every parameter whose state has another dtype than itself (a
    ``state_dtype`` option) is converted, with its gradient and state, to the dtype the fused
    kernel computes it in (float64 if any of them is float64, else float32); and the (tensor,
    converted copy) pairs to copy back. The parameter and its state are then rounded once, when
    stored, in their own dtypes, as in the kernel.
    """
    if len(slots) < 3 or all(p.dtype == s.dtype for p, s in zip(slots[0], slots[2])):
        return slots, []
    converted = [list(xs) for xs in slots]
    write_back = []
    for i, (p, s) in enumerate(zip(slots[0], slots[2])):
        if p.dtype == s.dtype:
            continue
        column = [xs[i] for xs in slots]
        computing = torch.float64 if torch.float64 in {t.dtype for t in column} else torch.float32
        for slot, tensor in enumerate(column):
            if tensor.dtype != computing:
                converted[slot][i] = tensor.to(computing)
                if slot != 1:  # gradients are only read
                    write_back.append((tensor, converted[slot][i]))
    return converted, write_back


def _write_back(pairs: list) -> None:
    for param, computed in pairs:
        param.copy_(computed)


def _apply_foreach(rule, group, keys, slots, steps) -> None:
    slots, write_back = in_state_dtype(slots)
    for (*_, step), index in _buckets(slots[0], steps, by_device=True).items():
        _update(rule, FOREACH, group, keys, _select(slots, index), step)
    _write_back(write_back)


def _apply_fused(rule, group, keys, slots, steps) -> None:
    # Every bucket's program is traced (so every scalar computed) before any tensor is written.
    plans = []
    for (_, step), index in _buckets(slots[0], steps, by_device=False).items():
        program = fused.trace(
            lambda ops, *lists, step=step: _update(rule, ops, group, keys, lists, step),
            len(slots),
        )
        plans.append((program, index, step))
    leftovers: list[int] = []
    left_steps: list[int] = []
    for program, index, step in plans:
        on_cpu = [i for i in index if slots[0][i].is_cpu]
        skipped = [i for i in index if not slots[0][i].is_cpu]
        if on_cpu:
            skipped += [on_cpu[i] for i in fused.run(program, _select(slots, on_cpu))]
        skipped = _run_on_accelerator(program, slots, skipped)
        leftovers += skipped
        left_steps += [step] * len(skipped)
    if leftovers:
        _apply_foreach(rule, group, keys, _select(slots, leftovers), left_steps)


def _run_on_accelerator(program: fused.Program, slots, index: list[int]) -> list[int]:
    """Run the CUDA parameters among ``index`` with torch's fused Adam kernels where the
    program is an Adam step (:mod:`.torch_fused`); return the indices left for foreach."""
    on_cuda = [i for i in index if on_accelerator(slots[0][i])]
    if not on_cuda:
        return index
    call = torch_fused.match(program)
    if call is None:
        return index
    try:
        torch_fused.run_(call, _select(slots, on_cuda))
    except ValueError:  # e.g. float32 state beside bfloat16 parameters; nothing was written
        return index
    return [i for i in index if not on_accelerator(slots[0][i])]


def on_accelerator(tensor: Tensor) -> bool:
    """Whether the fused engine hands ``tensor`` to torch's fused kernels (CUDA tensors)."""
    return tensor.is_cuda
