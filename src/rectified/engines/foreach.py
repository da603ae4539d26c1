"""The foreach engine: every list operation is one ``torch._foreach_*`` call over the list.

On CUDA these are multi-tensor kernels; on CPU they still save the Python loop. Each temporary
(e.g. ``sqrt(v)``) is allocated for the whole list at once.
"""

from __future__ import annotations

import torch

from rectified.engines.engine import Engine
from rectified.rules.base import TensorList
from rectified.rules.composed import ComposedOps


class ForeachOps(ComposedOps):
    """:class:`~rectified.rules.base.TensorListOps` as ``torch._foreach_*`` calls."""

    def neg(self, xs: TensorList) -> TensorList:
        return list(torch._foreach_neg(xs))

    def clone(self, xs: TensorList) -> TensorList:
        return [x.clone() for x in xs]

    def sqrt(self, xs: TensorList) -> TensorList:
        return list(torch._foreach_sqrt(xs))

    def add(self, xs: TensorList, ys: TensorList, alpha: float = 1.0) -> TensorList:
        return list(torch._foreach_add(xs, ys, alpha=alpha))

    def add_(self, xs: TensorList, ys: TensorList, alpha: float = 1.0) -> None:
        torch._foreach_add_(xs, ys, alpha=alpha)

    def add_scalar_(self, xs: TensorList, value: float) -> None:
        torch._foreach_add_(xs, value)

    def mul_(self, xs: TensorList, value: float) -> None:
        torch._foreach_mul_(xs, value)

    def mul_tensors_(self, xs: TensorList, ys: TensorList) -> None:
        torch._foreach_mul_(xs, ys)

    def div_(self, xs: TensorList, value: float) -> None:
        torch._foreach_div_(xs, value)

    def div_tensors_(self, xs: TensorList, ys: TensorList) -> None:
        torch._foreach_div_(xs, ys)

    def reciprocal_(self, xs: TensorList) -> None:
        torch._foreach_reciprocal_(xs)

    def lerp_(self, xs: TensorList, ys: TensorList, weight: float) -> None:
        torch._foreach_lerp_(xs, ys, weight)

    def addcmul_(self, xs: TensorList, ys: TensorList, zs: TensorList, value: float) -> None:
        torch._foreach_addcmul_(xs, ys, zs, value=value)

    def addcdiv_(self, xs: TensorList, ys: TensorList, zs: TensorList, value: float) -> None:
        torch._foreach_addcdiv_(xs, ys, zs, value=value)

    def maximum_(self, xs: TensorList, ys: TensorList) -> None:
        torch._foreach_maximum_(xs, ys)

    def clamp_(self, xs: TensorList, low: float, high: float) -> None:
        torch._foreach_clamp_min_(xs, low)
        torch._foreach_clamp_max_(xs, high)

    def copy_(self, xs: TensorList, ys: TensorList) -> None:
        try:
            torch._foreach_copy_(xs, ys)
        except NotImplementedError:  # DTensor has no sharding strategy for it
            for x, y in zip(xs, ys):
                x.copy_(y)


FOREACH = ForeachOps()


class ForeachEngine(Engine):
    """The rule runs once per bucket of parameters that share device, dtype and step count."""

    name = "foreach"
    ops = FOREACH
