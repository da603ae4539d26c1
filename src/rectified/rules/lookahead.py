"""Lookahead's slow-weight update, the operation every k-th step of the wrapper applies.

Zhang, Lucas, Hinton & Ba, "Lookahead Optimizer: k steps forward, 1 step back"
(arXiv 1907.08610): with slow weights φ and fast weights θ,

    φ <- φ + α (θ - φ);   θ <- φ

It is the named operation ``lookahead_sync_`` of :class:`~rectified.rules.base.TensorListOps`;
:func:`lookahead_sync_` is its meaning in primitives.
"""

from __future__ import annotations

from rectified.rules.base import TensorList, TensorListOps


def lookahead_sync_(
    ops: TensorListOps, slows: TensorList, params: TensorList, alpha: float
) -> None:
    """φ <- lerp(φ, θ, α);  θ <- φ."""
    ops.lerp_(slows, params, alpha)
    ops.copy_(params, slows)
