"""The fused engine: a rule's step traced into a short program (:mod:`.program`) that one C++
kernel (:mod:`.kernel`) runs over every tensor of a bucket in a single parallel pass, each chunk
of a few thousand elements running the whole program while it is in cache; a named operation
(Adam's step, AdaBound's, Lookahead's sync) is one loop, so each parameter and state tensor is
read and written once per step and no temporary the size of a parameter is allocated.

Arithmetic runs in float32 for float32, bfloat16 and float16 tensors (rounded once, when
stored) and in float64 for float64 ones. A group whose tensors are unchanged since the last step
keeps its plan (:mod:`.plans`). On CUDA an Adam step goes to torch's fused Adam kernels
(:mod:`.cuda`). Tensors the kernel cannot read as plain values (off the CPU, not contiguous,
lazily negated or conjugated, subclasses) run foreach in the same step.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from rectified import formats
from rectified.engines.engine import Engine, GroupStep, StateMap, buckets, update
from rectified.engines.foreach import ForeachEngine
from rectified.engines.fused import cuda, formatted, kernel
from rectified.engines.fused.plans import GroupPlan
from rectified.engines.fused.program import Program, trace
from rectified.engines.reference import ReferenceEngine
from rectified.engines.state import eps_underflows
from rectified.engines.stored import Codec, Stored
from rectified.engines.tensors import Slots, overlapping, select
from rectified.rules.base import UpdateRule

FOREACH_ENGINE = ForeachEngine()
REFERENCE_ENGINE = ReferenceEngine()
GRADIENTS = (1,)  # the slot a rule's step only reads


def available(build_if_missing: bool = False) -> bool:
    """Whether the kernel is loaded (from the build cache; compiled first if asked)."""
    return kernel.load(build_if_missing)


class PlannedStep(GroupStep):
    def __init__(self, engine: FusedEngine, rule: UpdateRule, group: Mapping[str, Any],
                 state: StateMap, plan: GroupPlan, owner: str) -> None:
        super().__init__(engine, rule, group, state, list(plan.params))
        self.plan, self.owner = plan, owner


class FusedEngine(Engine):
    name = "fused"

    def __init__(self) -> None:
        self._plans: dict[int, GroupPlan] = {}

    def prepare(self, rule: UpdateRule, group: Mapping[str, Any], state: StateMap,
                owner: str) -> GroupStep:
        plan = self._plans.get(id(group))
        if (plan is not None and plan.matches(group, state, rule.state_keys(group))
                and plan.usable(rule, group)):
            return PlannedStep(self, rule, group, state, plan, owner)
        step = super().prepare(rule, group, state, owner)
        if group.get("fused") and not all(p.is_cpu or p.is_cuda for p in step.params):
            devices = sorted({p.device.type for p in step.params} - {"cpu", "cuda"})
            raise RuntimeError(
                "`fused=True` requires all the params to be floating point Tensors of "
                f"supported devices: ['cpu', 'cuda'], got tensors on {', '.join(devices)}; "
                "use fused=None or foreach=True there"
            )
        return step

    def run(self, step: GroupStep) -> None:
        if isinstance(step, PlannedStep):
            if step.plan.step_(step.rule, step.group):
                return
            # The plan could not run (nothing moved): the general path, its checks first.
            step = Engine.prepare(self, step.rule, step.group, step.state, step.owner)
        self._plans.pop(id(step.group), None)
        keys, entries, counts = self.run_general(step)
        storage = formats.storage_of(step.group)
        plan = GroupPlan.make(step.group, step.params, entries, keys, counts) if storage is None \
            else formatted.FormattedPlan.make(step.group, step.params, entries, keys, counts,
                                              storage, step.rule)
        if plan is not None:
            self._plans[id(step.group)] = plan

    def run_stored(self, rule: UpdateRule, group: Mapping[str, Any], keys: Sequence[str],
                   slots: Slots, entries: Sequence[dict[str, Any]], counts: Sequence[int],
                   how: Sequence[Stored], storage: formats.Storage) -> None:
        left = formatted.run_(rule, group, keys, slots, entries, counts, how, storage)
        if left:
            super().run_stored(rule, group, keys, select(slots, left),
                               [entries[i] for i in left], [counts[i] for i in left],
                               [how[i] for i in left], storage)

    def codec(self) -> Codec:
        return formatted.KERNEL_CODEC

    def forget(self) -> None:
        self._plans.clear()

    def fallback(self) -> Engine:
        return FOREACH_ENGINE

    def bucket_key(self, param: Tensor, count: int) -> Hashable:
        # The kernel takes any mix of devices and dtypes; float64 makes a bucket compute in it.
        return (param.dtype is torch.float64, count)

    def apply(self, rule: UpdateRule, group: Mapping[str, Any], keys: Sequence[str],
              slots: Slots, counts: Sequence[int]) -> None:
        """Buckets of parameters through the kernel; what it cannot take through foreach; and
        parameters whose tensors share memory one at a time, exactly as the reference engine.

        Parameters whose ε rounds to 0 in their dtype (float16 with ε = 1e-8) run foreach:
        the kernel computes in float32, where ε does not vanish, and would turn finite what
        every other engine (and torch.optim) turns inf or NaN.
        """
        # Every bucket's program is traced (so every scalar computed) before any tensor moves.
        traced = []
        for (_, count), index in buckets(slots[0], counts, self.bucket_key).items():
            def body(ops, *lists, count=count) -> None:
                update(rule, ops, group, keys, list(lists), count)

            traced.append((trace(body, len(slots)), index, count))
        foreach: list[int] = []
        aliased: list[int] = []
        for program, index, _ in traced:
            if eps_underflows(group, {slots[0][i].dtype for i in index}):
                foreach += [i for i in index if eps_underflows(group, {slots[0][i].dtype})]
                index = [i for i in index if not eps_underflows(group, {slots[0][i].dtype})]
            skipped, shared = self._run(program, slots, index, GRADIENTS)
            foreach += skipped
            aliased += shared
        self._run_aside(foreach, aliased, slots, GRADIENTS, lambda engine, chosen: engine.apply(
            rule, group, keys, select(slots, chosen), [counts[i] for i in chosen]))

    def apply_elementwise(self, body: Callable[..., None], slots: Slots) -> None:
        skipped, aliased = self._run(trace(body, len(slots)), slots, list(range(len(slots[0]))))
        self._run_aside(skipped, aliased, slots, (), lambda engine, chosen:
                        engine.apply_elementwise(body, select(slots, chosen)))

    @staticmethod
    def _run_aside(foreach: list[int], aliased: list[int], slots: Slots,
                   read_only: Sequence[int], run: Callable[[Engine, list[int]], None]) -> None:
        """Run the parameters the kernel left: ``foreach`` with the foreach engine unless they
        share memory, and those that do (``aliased``, and any of ``foreach`` whose memory
        overlaps another of them) with the reference engine, in the group's order."""
        if foreach:
            shared = {foreach[i] for i in overlapping(select(slots, foreach), read_only)}
            aliased = [*aliased, *(i for i in foreach if i in shared)]
            foreach = [i for i in foreach if i not in shared]
        if foreach:
            run(FOREACH_ENGINE, sorted(foreach))
        if aliased:
            run(REFERENCE_ENGINE, sorted(aliased))

    def _run(self, program: Program, slots: Slots, index: list[int],
             read_only: Sequence[int] = ()) -> tuple[list[int], list[int]]:
        """Run ``program`` over the parameters ``index``; return those left for foreach and
        those whose memory overlaps another tensor of the run (for the reference engine)."""
        on_cpu = [i for i in index if slots[0][i].is_cpu]
        skipped = [i for i in index if not slots[0][i].is_cpu]
        aliased: list[int] = []
        if on_cpu:
            left, shared = kernel.run_program_(program, select(slots, on_cpu), read_only)
            skipped += [on_cpu[i] for i in left]
            aliased += [on_cpu[i] for i in shared]
        on_cuda = [i for i in skipped if slots[0][i].is_cuda]
        call = cuda.adam_call(program) if on_cuda else None
        if call is None:
            return skipped, aliased
        overlap = {on_cuda[i] for i in overlapping(select(slots, on_cuda), read_only)}
        on_cuda = [i for i in on_cuda if i not in overlap]
        try:
            if on_cuda:
                cuda.run_(call, select(slots, on_cuda))
        except ValueError:  # e.g. float32 state beside bfloat16 parameters; nothing was written
            return skipped, aliased
        taken = set(on_cuda) | overlap
        return [i for i in skipped if i not in taken], aliased + sorted(overlap)

