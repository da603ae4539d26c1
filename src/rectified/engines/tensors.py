"""What a tensor handed to an engine can be, and how each kind is made plain before a rule runs:
DTensor shards, complex numbers, another dtype than the one the step computes in, and storage
shared between parameters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import Tensor

from rectified.engines.fused import kernel
from rectified.formats import sharded

Slots = list[list[Tensor]]  # slots[s][i]: list s (params, grads, state...) of parameter i


is_distributed = sharded.is_dtensor  # whether a tensor is a DTensor (free without distributed)


def local_shards(column: Sequence[Tensor]) -> list[Tensor] | None:
    """The local shards of one parameter's DTensors (parameter, gradient, state), or None.

    An update rule is elementwise, so running it on the local shards is the same as running it
    on the DTensors, provided every tensor is laid out alike: same mesh, same placements, none
    partial (pending a reduction). Otherwise the DTensors are left to their own dispatch.
    """
    first: Any = column[0]
    if not all(is_distributed(t) for t in column):
        return None
    layout = (first.device_mesh, tuple(first.placements))
    if any(p.is_partial() for p in first.placements) or any(
        (t.device_mesh, tuple(t.placements)) != layout for t in cast(list[Any], column)
    ):
        return None
    return [t.to_local() for t in cast(list[Any], column)]


def as_local(slots: Slots) -> tuple[Slots, bool]:
    """Slots with DTensors replaced by their local shards where that is exact; and whether any
    DTensor is left."""
    if not sharded.any_dtensor(slots[0]):
        return slots, False
    columns, left = [], False
    for column in zip(*slots):
        local = local_shards(column)
        left |= local is None
        columns.append(list(column) if local is None else local)
    return [list(row) for row in zip(*columns)], left


def real(tensor: Tensor) -> Tensor:
    """A complex tensor as its real view (real and imaginary parts as a last dimension).

    A lazily conjugated tensor has no real view of its values, so it is resolved into a copy:
    right for gradients, which are only read; the engines refuse parameters and state with the
    conjugate bit before a step (see :func:`~rectified.engines.state.check_gradients`).
    """
    if not tensor.is_complex():
        return tensor
    return torch.view_as_real(tensor.resolve_conj() if tensor.is_conj() else tensor)


def _memory_span(tensor: Tensor) -> tuple[Any, int, int] | None:
    """(device, first byte, end byte) of the memory ``tensor``'s elements can occupy, or None
    when it has no elements or no memory of its own (a wrapper subclass)."""
    if tensor.numel() == 0:
        return None
    try:
        start = tensor.data_ptr()
    except RuntimeError:
        return None
    if start == 0:
        return None
    last = sum((size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride()))
    return tensor.device, start, start + (last + 1) * tensor.element_size()


def overlapping(slots: Slots, read_only: Sequence[int] = ()) -> list[int]:
    """The parameters (indices) with a tensor whose memory overlaps another tensor of
    ``slots`` where either of the two is written (a slot not in ``read_only``): parameters
    tied through ``.data``, views of one buffer, state shared between parameters.

    Spans are from the first to the last element, so interleaved views (``x[0::2]`` and
    ``x[1::2]``) count as overlapping: a step that runs them one at a time is still right.
    The fused kernel's loop does the same when it is loaded (13 ms in Python for 4,000
    tensors, a step's worth of time for small parameters).
    """
    if kernel.is_loaded() and all(len(tensors) == len(slots[0]) for tensors in slots):
        return kernel.overlapping(slots, read_only)
    spans = []
    for slot, tensors in enumerate(slots):
        written = slot not in read_only
        for index, tensor in enumerate(tensors):
            memory = _memory_span(tensor)
            if memory is not None:
                device, start, end = memory
                spans.append((str(device), start, end, index, written))
    spans.sort(key=lambda span: span[:2])
    flagged: set[int] = set()
    cluster: list[tuple[Any, ...]] = []  # spans that overlap one another, by transitivity
    end = 0
    for span in [*spans, None]:
        if span is not None and cluster and span[0] == cluster[0][0] and span[1] < end:
            cluster.append(span)
            end = max(end, span[2])
            continue
        if len(cluster) > 1 and any(c[4] for c in cluster):
            flagged.update(c[3] for c in cluster)
        cluster = [span] if span is not None else []
        end = span[2] if span is not None else 0
    return sorted(flagged)


def mixed_columns(slots: Slots) -> list[int]:
    """The parameters (indices) whose gradient or a state tensor has another dtype than they
    have: a ``state_dtype`` option, or a gradient of another dtype, which torch allows through
    ``Tensor.grad_dtype``."""
    return [i for i, column in enumerate(zip(*slots))
            if any(x.dtype != column[0].dtype for x in column)]


def _computing_dtype(column: Sequence[Tensor]) -> torch.dtype:
    """The dtype the fused kernel computes a mixed column in."""
    return torch.float64 if torch.float64 in {t.dtype for t in column} else torch.float32


def computing_parts(slots: Slots, mixed: Sequence[int]) -> list[list[int]]:
    """The parameters (indices) in the parts they can be converted and run in, given those of
    :func:`mixed_columns`: all at once, except where a parameter or state tensor to convert
    shares memory with another tensor (parameters tied through ``.data``). Each converted copy
    starts from the values before the step, so the last one copied back would undo its twin's
    update: those parameters run one at a time, each converted, stepped and copied back before
    the next, as the reference engine runs tied parameters."""
    everything = list(range(len(slots[0])))
    if not mixed or len(everything) < 2:
        return [everything]
    copied = set()  # parameters of which a tensor the step writes is converted
    for i in mixed:
        column = [xs[i] for xs in slots]
        computing = _computing_dtype(column)
        if any(x.dtype != computing for slot, x in enumerate(column) if slot != 1):
            copied.add(i)
    if not copied:
        return [everything]
    shared = set(overlapping(slots, (1,)))
    if shared.isdisjoint(copied):
        return [everything]
    rest = [i for i in everything if i not in shared]
    return [rest] * bool(rest) + [[i] for i in sorted(shared)]


def to_computing_dtype(slots: Slots, mixed: Sequence[int] | None = None,
                       ) -> tuple[Slots, list[tuple[Tensor, Tensor]]]:
    """Slots where every parameter of :func:`mixed_columns` is converted, with its gradient and
    state, to the dtype the fused kernel computes it in (float64 if any of them is float64,
    else float32); and the (tensor, converted copy) pairs to copy back. The parameter and its
    state are then rounded once, when stored, in their own dtypes, as in the kernel. Parameters
    sharing memory must be converted apart (:func:`computing_parts`).
    """
    mixed = mixed_columns(slots) if mixed is None else mixed
    if not mixed:
        return slots, []
    converted = [list(xs) for xs in slots]
    write_back = []
    for i in mixed:
        column = [xs[i] for xs in slots]
        computing = _computing_dtype(column)
        for slot, tensor in enumerate(column):
            if tensor.dtype != computing:
                converted[slot][i] = tensor.to(computing)
                if slot != 1:  # gradients are only read
                    write_back.append((tensor, converted[slot][i]))
    return converted, write_back


def write_back(pairs: list[tuple[Tensor, Tensor]]) -> None:
    for tensor, computed in pairs:
        tensor.copy_(computed)


def select(slots: Slots, index: Sequence[int]) -> Slots:
    if len(index) == len(slots[0]) and list(index) == list(range(len(index))):
        return slots
    return [[xs[i] for i in index] for xs in slots]
