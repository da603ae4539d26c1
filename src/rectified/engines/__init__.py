"""Engines: how one update rule is executed over a param group.

* ``reference``: every operation tensor by tensor, with plain tensor ops (:mod:`.reference`).
* ``foreach``: the rule runs once per bucket of parameters that share device, dtype and step
  count, with ``torch._foreach_*`` ops (:mod:`.foreach`).
* ``fused``: the rule is traced into an elementwise program that one C++ kernel runs over a
  whole bucket in a single pass (:mod:`.fused`, CPU); on CUDA an Adam step is handed to torch's
  fused Adam kernels, and anything else runs foreach.

All call the same :meth:`~rectified.rules.base.UpdateRule.update_`, so they agree up to float
rounding; the tests hold them equal. The optimizers and wrappers use only :class:`Stepper`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rectified.engines.engine import Engine, GroupStep, StateMap
from rectified.engines.foreach import ForeachEngine
from rectified.engines.fused import kernel
from rectified.engines.fused.engine import FusedEngine, available
from rectified.engines.reference import ReferenceEngine
from rectified.engines.state import state_dtype, state_of
from rectified.engines.tensors import Slots, is_distributed
from rectified.rules.base import UpdateRule

ENGINES = ("reference", "foreach", "fused")

__all__ = ["ENGINES", "GroupStep", "Stepper", "engine_for", "engines_of", "is_distributed",
           "state_dtype"]


def engine_for(group: Mapping[str, Any], fused_by_default: bool = True,
               build: bool = True) -> str:
    """The engine a group asks for through ``fused`` and ``foreach``.

    ``fused=True`` runs fused. ``foreach=False`` runs the reference engine. With both None, a
    group whose rule is ``fused_by_default`` (the Adam family) runs fused; everything else runs
    foreach. Fused needs the C++ kernel for CPU tensors (not on CUDA, where it hands Adam steps
    to torch's kernels): if it is not built yet, it is compiled here (once per installation,
    with a message on stderr; not if ``build`` is False, which answers from what is built
    already); if it cannot be built, a warning is given once and the group runs foreach. So
    every process of one installation makes the same choice.
    """
    if group.get("foreach") is False and not group.get("fused"):
        return "reference"
    auto = group.get("fused", False) is None and group.get("foreach") is None
    if not (group.get("fused") or (auto and fused_by_default)):
        return "foreach"
    if kernel.is_loaded() or not any(p.is_cpu for p in group["params"]):
        return "fused"
    return "fused" if available(build_if_missing=build) else "foreach"


def engines_of(optimizer: Any) -> list[str]:
    """The engine each param group of a :mod:`rectified` optimizer runs (of a wrapper such as
    Lookahead or Ranger: its inner optimizer's; ``"torch.optim"`` for a torch optimizer inside
    one). Compiles the kernel first if a group needs it and it is not built (see
    :func:`engine_for`)."""
    while not hasattr(optimizer, "rule") and hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    rule = getattr(optimizer, "rule", None)
    if rule is None:
        return ["torch.optim"] * len(optimizer.param_groups)
    return [engine_for(group, rule.fused_by_default) for group in optimizer.param_groups]


class Stepper:
    """What an optimizer asks of the engines, with each engine's per-group caches.

    ``prepare`` checks a group's step (raising before anything changes); the returned
    :class:`GroupStep` exposes its gradients and ``run()``. ``elementwise`` runs an operation
    such as Lookahead's sync over lists with the engine the group asks for.
    """

    def __init__(self) -> None:
        self._engines: dict[str, Engine] = {
            "reference": ReferenceEngine(), "foreach": ForeachEngine(), "fused": FusedEngine()}

    def engine(self, name: str) -> Engine:
        if name not in self._engines:
            raise ValueError(f"Unknown engine: {name!r} (expected one of {ENGINES})")
        return self._engines[name]

    def prepare(self, rule: UpdateRule, group: Mapping[str, Any], state: StateMap,
                owner: str) -> GroupStep:
        name = engine_for(group, rule.fused_by_default)
        return self._engines[name].prepare(rule, group, state, owner)

    def elementwise(self, group: Mapping[str, Any], body: Callable[..., None],
                    slots: Slots) -> None:
        """``body(ops, *lists)`` over ``slots`` with the group's engine."""
        self._engines[engine_for(group)].elementwise(body, slots)

    def fill_state(self, rule: UpdateRule, group: Mapping[str, Any], state: StateMap) -> None:
        """Give each parameter of ``group`` that has none the fresh state a first step would
        (``torch.optim.Adagrad`` makes its state at construction)."""
        keys = frozenset(rule.state_keys(group))
        for p in group["params"]:
            state_of(state[p], p, group, rule, keys)

    def forget(self) -> None:
        """Drop every cache (after a checkpoint load)."""
        for engine in self._engines.values():
            engine.forget()
