"""What an update rule is, and the list operations it is written in.

A rule is math over lists of tensors. It never loops over parameters itself: it calls the
list operations of :class:`TensorListOps`, and an engine decides how those run (one tensor at a
time, ``torch._foreach_*`` kernels, ...). So each rule is written once and every engine runs
the same definition.

Per-step scalars (bias corrections, rho_t, r_t, AdaBound's bounds) are plain functions of the
step and the hyperparameters, computed once per call of :meth:`UpdateRule.update_`; the list
operations only do elementwise work.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

if TYPE_CHECKING:
    from rectified.rules.adabound import BoundedStep
    from rectified.rules.moments import AdamStep

TensorList = list[Tensor]


class TensorListOps(Protocol):
    """Elementwise operations over equally long lists of tensors (``_`` = in place).

    The primitives come first. The named operations after them are whole steps that engines
    may run as one loop; each has one definition as a composition of primitives
    (:class:`rectified.rules.composed.ComposedOps`), which is what it means.
    """

    def neg(self, xs: TensorList) -> TensorList: ...
    def clone(self, xs: TensorList) -> TensorList: ...
    def sqrt(self, xs: TensorList) -> TensorList: ...
    def add(self, xs: TensorList, ys: TensorList, alpha: float = 1.0) -> TensorList: ...
    def add_(self, xs: TensorList, ys: TensorList, alpha: float = 1.0) -> None: ...
    def add_scalar_(self, xs: TensorList, value: float) -> None: ...
    def mul_(self, xs: TensorList, value: float) -> None: ...
    def mul_tensors_(self, xs: TensorList, ys: TensorList) -> None: ...
    def div_(self, xs: TensorList, value: float) -> None: ...
    def div_tensors_(self, xs: TensorList, ys: TensorList) -> None: ...
    def reciprocal_(self, xs: TensorList) -> None: ...
    def lerp_(self, xs: TensorList, ys: TensorList, weight: float) -> None: ...
    def addcmul_(self, xs: TensorList, ys: TensorList, zs: TensorList, value: float) -> None: ...
    def addcdiv_(self, xs: TensorList, ys: TensorList, zs: TensorList, value: float) -> None: ...
    def maximum_(self, xs: TensorList, ys: TensorList) -> None: ...
    def clamp_(self, xs: TensorList, low: float, high: float) -> None: ...
    def copy_(self, xs: TensorList, ys: TensorList) -> None: ...

    def adam_step_(
        self, params: TensorList, grads: TensorList, exp_avgs: TensorList,
        exp_avg_sqs: TensorList, max_exp_avg_sqs: TensorList | None, step: AdamStep,
    ) -> None: ...
    def bounded_step_(
        self, params: TensorList, grads: TensorList, exp_avgs: TensorList,
        exp_avg_sqs: TensorList, max_exp_avg_sqs: TensorList | None, step: BoundedStep,
    ) -> None: ...
    def lookahead_sync_(self, slows: TensorList, params: TensorList, alpha: float) -> None: ...


class UpdateRule:
    """One optimizer's update, as math over lists of tensors.

    Subclasses set ``name`` and implement :meth:`state_keys`, :meth:`init_state` and
    :meth:`update_`. ``update_`` receives tensors that are all real (complex ones are viewed as
    real by the engine), on one device, of one dtype and at one step count ``step`` (the count
    *after* this update, starting at 1).
    """

    name: str = "rule"
    # Whether ``fused=None`` runs the fused engine when its kernel is built (the Adam family,
    # whose steps are one loop there); other rules run foreach unless ``fused=True``.
    fused_by_default: bool = False
    # Whether the count ``update_`` reads is the number of steps since the state was made (SGD:
    # its first momentum step copies the gradient): state made mid-run (momentum switched on)
    # then starts the count again, as torch.optim's first use of a momentum buffer does.
    counts_from_state: bool = False

    def state_keys(self, group: Mapping[str, Any]) -> tuple[str, ...]:
        """Names of the per-parameter state tensors the update reads and writes."""
        raise NotImplementedError

    def init_state(self, param: Tensor, group: Mapping[str, Any]) -> dict[str, Tensor]:
        """Fresh state of ``param`` (without ``step``, which the optimizer owns)."""
        raise NotImplementedError

    def update_(
        self,
        ops: TensorListOps,
        params: TensorList,
        grads: TensorList,
        state: dict[str, TensorList],
        group: Mapping[str, Any],
        step: int,
    ) -> None:
        raise NotImplementedError

    # -- sparse gradients --------------------------------------------------------------------
    # A rule with a sparse update sets ``supports_sparse`` and implements ``sparse_update_``;
    # ``sparse_hint`` ends the error of the others (e.g. the Adam family names SparseAdam).
    supports_sparse: bool = False
    sparse_hint: str = ""

    def check_sparse(self, group: Mapping[str, Any], owner: str) -> None:
        """Raise ``RuntimeError`` if ``group`` cannot step sparse gradients (called before
        anything changes)."""
        if not self.supports_sparse:
            raise RuntimeError(f"{owner} does not support sparse gradients{self.sparse_hint}")

    def sparse_update_(
        self, param: Tensor, grad: Tensor, state: dict[str, Tensor], group: Mapping[str, Any],
        step: int,
    ) -> None:
        """One parameter's update from a sparse COO ``grad`` (state as :meth:`init_state`
        builds it, dense)."""
        raise NotImplementedError


def zeros_like(param: Tensor) -> Tensor:
    return torch.zeros_like(param, memory_format=torch.preserve_format)


def scalar(value: Any) -> float:
    """A hyperparameter as a Python float (accepts 1-element tensors, as torch.optim does)."""
    return float(value.item()) if isinstance(value, Tensor) else float(value)


def effective_gradients(
    ops: TensorListOps,
    params: TensorList,
    grads: TensorList,
    *,
    maximize: bool,
    weight_decay: float,
) -> TensorList:
    """The gradient the rule follows: negated under ``maximize``, plus L2 decay ``wd * p``.

    Never writes into ``grads`` (they belong to the user).
    """
    if maximize:
        grads = ops.neg(grads)
    if weight_decay != 0:
        grads = ops.add(grads, params, alpha=weight_decay)
    return grads
