"""The reference engine: every list operation tensor by tensor with plain torch ops (the named
operations as their compositions of primitives), the rule once per parameter (small
parameters that share no memory: once per step count, see :meth:`ReferenceEngine.apply`).

It is the slowest engine and the one the others are tested against.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from rectified.engines.engine import Engine, buckets, update
from rectified.engines.fused import kernel
from rectified.engines.tensors import Slots, overlapping, select
from rectified.rules.base import TensorList, UpdateRule
from rectified.rules.composed import ComposedOps


class PerTensorOps(ComposedOps):
    """:class:`~rectified.rules.base.TensorListOps` as a loop of ordinary tensor methods."""

    def neg(self, xs: TensorList) -> TensorList:
        return [x.neg() for x in xs]

    def clone(self, xs: TensorList) -> TensorList:
        return [x.clone() for x in xs]

    def sqrt(self, xs: TensorList) -> TensorList:
        # Under autograd (differentiable=True) the graph keeps sqrt's result for its backward,
        # and rules go on to modify the returned tensors in place: hand them a copy then.
        return [_unshared(x.sqrt()) for x in xs]

    def add(self, xs: TensorList, ys: TensorList, alpha: float = 1.0) -> TensorList:
        return [x.add(y, alpha=alpha) for x, y in zip(xs, ys)]

    def add_(self, xs: TensorList, ys: TensorList, alpha: float = 1.0) -> None:
        for x, y in zip(xs, ys):
            x.add_(y, alpha=alpha)

    def add_scalar_(self, xs: TensorList, value: float) -> None:
        for x in xs:
            x.add_(value)

    def mul_(self, xs: TensorList, value: float) -> None:
        for x in xs:
            x.mul_(value)

    def mul_tensors_(self, xs: TensorList, ys: TensorList) -> None:
        for x, y in zip(xs, ys):
            x.mul_(y)

    def div_(self, xs: TensorList, value: float) -> None:
        for x in xs:
            x.div_(value)

    def div_tensors_(self, xs: TensorList, ys: TensorList) -> None:
        for x, y in zip(xs, ys):
            x.div_(y)

    def reciprocal_(self, xs: TensorList) -> None:
        for x in xs:
            x.reciprocal_()

    def lerp_(self, xs: TensorList, ys: TensorList, weight: float) -> None:
        for x, y in zip(xs, ys):
            x.lerp_(y, weight)

    def addcmul_(self, xs: TensorList, ys: TensorList, zs: TensorList, value: float) -> None:
        for x, y, z in zip(xs, ys, zs):
            x.addcmul_(y, z, value=value)

    def addcdiv_(self, xs: TensorList, ys: TensorList, zs: TensorList, value: float) -> None:
        for x, y, z in zip(xs, ys, zs):
            x.addcdiv_(y, z, value=value)

    def maximum_(self, xs: TensorList, ys: TensorList) -> None:
        for x, y in zip(xs, ys):
            if x.requires_grad or y.requires_grad:  # out= has no derivative; the backward
                x.copy_(torch.maximum(x.clone(), y))  # of maximum reads its inputs
            else:
                torch.maximum(x, y, out=x)

    def clamp_(self, xs: TensorList, low: float, high: float) -> None:
        for x in xs:
            x.clamp_(low, high)

    def copy_(self, xs: TensorList, ys: TensorList) -> None:
        for x, y in zip(xs, ys):
            x.copy_(y)


def _unshared(result: Tensor) -> Tensor:
    """``result``, or a copy of it where autograd saved it for a backward pass."""
    return result.clone() if result.requires_grad else result


PER_TENSOR = PerTensorOps()
SMALL = 1 << 16  # elements: parameters up to this size may run in one call of the rule


class ReferenceEngine(Engine):
    name = "reference"
    ops = PER_TENSOR

    def apply(self, rule: UpdateRule, group: Mapping[str, Any], keys: Sequence[str],
              slots: Slots, counts: Sequence[int]) -> None:
        """The rule once per parameter. Small parameters that share no memory with another
        may run as one call per step count instead: every operation still runs tensor by
        tensor, so each parameter sees the same operations on the same values (an update rule
        is elementwise), and the rule's scalars are computed once, not once per parameter
        (1,000 parameters of 10k: up to 9% faster, measured in docs/performance.md). Large
        ones run alone, each staying in cache through all its operations (one call for ten of
        1M was 1.5x slower). Grouping needs the kernel's overlap test (cheap); without it every
        parameter runs alone."""
        alone = list(range(len(counts)))
        if kernel.is_loaded() and len(counts) > 1 and not group.get("differentiable"):
            shared = set(overlapping(slots, (1,)))
            alone = [i for i, p in enumerate(slots[0]) if i in shared or p.numel() > SMALL]
            together = set(range(len(counts))) - set(alone)
            for (*_, count), index in buckets(slots[0], counts, self.bucket_key).items():
                index = [i for i in index if i in together]
                if index:
                    update(rule, self.ops, group, keys, select(slots, index), count)
        for i in alone:
            update(rule, self.ops, group, keys, [[xs[i]] for xs in slots], counts[i])

    def apply_elementwise(self, body: Callable[..., None], slots: Slots) -> None:
        body(self.ops, *slots)
