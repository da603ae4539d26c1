"""The named operations of :class:`~rectified.rules.base.TensorListOps` as compositions of its
primitives: their one definition, which the reference and foreach engines run as it is."""

from __future__ import annotations

from typing import cast

from rectified.rules import adabound, lookahead, moments
from rectified.rules.base import TensorList, TensorListOps


class ComposedOps:
    """Mixin for an ops class with the primitives: the named operations, built from them."""

    def adam_step_(
        self, params: TensorList, grads: TensorList, exp_avgs: TensorList,
        exp_avg_sqs: TensorList, max_exp_avg_sqs: TensorList | None, step: moments.AdamStep,
    ) -> None:
        ops = cast(TensorListOps, self)
        moments.adam_step_(ops, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, step)

    def bounded_step_(
        self, params: TensorList, grads: TensorList, exp_avgs: TensorList,
        exp_avg_sqs: TensorList, max_exp_avg_sqs: TensorList | None,
        step: adabound.BoundedStep,
    ) -> None:
        ops = cast(TensorListOps, self)
        adabound.bounded_step_(ops, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, step)

    def lookahead_sync_(self, slows: TensorList, params: TensorList, alpha: float) -> None:
        lookahead.lookahead_sync_(cast(TensorListOps, self), slows, params, alpha)
