"""The reference engine: the rule runs once per parameter, and every list operation with plain
torch ops (the named operations as their compositions of primitives).

It is the slowest engine and the one the others are tested against.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from rectified.engines.engine import Engine, update
from rectified.engines.tensors import Slots
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


class ReferenceEngine(Engine):
    name = "reference"
    ops = PER_TENSOR

    def apply(self, rule: UpdateRule, group: Mapping[str, Any], keys: Sequence[str],
              slots: Slots, counts: Sequence[int]) -> None:
        for i, count in enumerate(counts):
            update(rule, self.ops, group, keys, [[xs[i]] for xs in slots], count)

    def apply_elementwise(self, body: Callable[..., None], slots: Slots) -> None:
        body(self.ops, *slots)
