"""What every engine shares: stepping a param group in two phases, ``prepare`` (every check,
nothing changed, so a bad group never leaves a step half-applied) and ``run``.

An engine subclass provides ``ops`` (its :class:`~rectified.rules.base.TensorListOps`) and,
where it runs lists its own way, :meth:`Engine.apply`; the fused engine also keeps plans.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor

from rectified import formats
from rectified.engines import state as states_
from rectified.engines.stored import (
    TORCH_OPS,
    Codec,
    Loaded,
    Local,
    Stored,
    check_layouts,
    stored,
)
from rectified.engines.tensors import (
    Slots,
    as_local,
    computing_parts,
    mixed_columns,
    real,
    select,
    to_computing_dtype,
    write_back,
)
from rectified.rules.base import TensorListOps, UpdateRule

StateMap = Mapping[Tensor, dict[str, Any]]
# What a formatted step loads into float32 at once, per moment (64 MB): the general path's
# working copies stay a small multiple of this, whatever the model's size.
WORKING_ELEMENTS = 1 << 24


class GroupStep:
    """A param group's step, checked and ready to run: ``params`` have dense gradients and run
    on the engine, ``sparse`` have sparse ones and run the rule's sparse update one by one;
    ``how``: how each of ``params`` is stored, where the group stores state in a format."""

    def __init__(self, engine: Engine, rule: UpdateRule, group: Mapping[str, Any],
                 state: StateMap, params: list[Tensor], sparse: Sequence[Tensor] = (),
                 how: Sequence[Stored] = ()) -> None:
        self.engine, self.rule, self.group, self.state = engine, rule, group, state
        self.params = params
        self.sparse = list(sparse)
        self.how = list(how)

    @property
    def grads(self) -> list[Tensor]:
        return [cast(Tensor, p.grad) for p in self.params]

    @property
    def sparse_values(self) -> list[Tensor]:
        """The values of the sparse gradients (each row once, its contributions summed)."""
        return [cast(Tensor, p.grad).coalesce().values() for p in self.sparse]

    def run(self) -> None:
        if self.params:
            self.engine.run(self)
        if self.sparse:
            run_sparse(self)


class Engine:
    name = "engine"
    ops: TensorListOps

    def prepare(self, rule: UpdateRule, group: Mapping[str, Any], state: StateMap,
                owner: str) -> GroupStep:
        """The group's step; raises (changing nothing) if a gradient does not fit."""
        params = [p for p in group["params"] if p.grad is not None]
        sparse = [p for p in params if cast(Tensor, p.grad).is_sparse]
        if sparse:
            check_sparse(rule, group, owner, sparse)
            params = [p for p in params if not cast(Tensor, p.grad).is_sparse]
        keys = rule.state_keys(group)
        states_.check_gradients(owner, params, state, keys, group)
        storage = formats.storage_of(group)
        how = stored(storage, group, params) if storage is not None else []
        check_layouts(owner, how, params, state, keys)
        return GroupStep(self, rule, group, state, params, sparse, how)

    def run(self, step: GroupStep) -> None:
        self.run_general(step)

    def run_general(self, step: GroupStep) -> tuple[tuple[str, ...], list[dict], list[int]]:
        """Fill in state, advance the step counters and run the rule; return the state keys,
        the parameters' state entries and their new counts."""
        rule, group, params = step.rule, step.group, step.params
        keys = rule.state_keys(group)
        key_set = frozenset(keys)
        entries = [states_.state_of(step.state[p], p, group, rule, key_set) for p in params]
        counts = states_.advance_steps_([entry["step"] for entry in entries])
        slots = [list(params), step.grads, *([entry[k] for entry in entries] for k in keys)]
        storage = formats.storage_of(group)
        if storage is None:
            self.run_rule(rule, group, keys, slots, counts)
        else:
            local = Local(slots, entries)  # `how` was decided on the DTensors, not the shards
            self.run_stored(rule, group, keys, local.slots, local.entries, counts, step.how,
                            storage)
            local.write_back()
        return keys, entries, counts

    def run_stored(self, rule: UpdateRule, group: Mapping[str, Any], keys: Sequence[str],
                   slots: Slots, entries: Sequence[dict[str, Any]], counts: Sequence[int],
                   how: Sequence[Stored], storage: formats.Storage) -> None:
        """Run the rule where the group stores state in a format: load, run, store; a few
        parameters at a time, so that the float32 working copies of the moments never hold
        more than about :data:`WORKING_ELEMENTS` elements each."""
        start = 0
        while start < len(slots[0]):
            stop, size = start, 0
            while stop < len(slots[0]) and (stop == start or size < WORKING_ELEMENTS):
                size += slots[0][stop].numel()
                stop += 1
            index = list(range(start, stop))
            chunk = select(slots, index)
            loaded = Loaded(storage, how[start:stop], chunk, entries[start:stop], keys,
                            counts[start:stop], self.codec())
            self.run_rule(rule, group, keys, loaded.slots, counts[start:stop])
            loaded.store_(chunk[0])
            start = stop

    def run_rule(self, rule: UpdateRule, group: Mapping[str, Any], keys: Sequence[str],
                 slots: Slots, counts: Sequence[int]) -> None:
        """Run ``rule`` on ``slots`` (params, grads, state lists in ``keys`` order), parameter i
        at step ``counts[i]``."""
        slots, distributed_left = as_local(slots)
        if any(p.is_complex() for p in slots[0]):  # then their grads and state are complex too
            slots = [[real(x) for x in xs] for xs in slots]
        engine = self.fallback() if distributed_left else self
        mixed = mixed_columns(slots)
        parts = computing_parts(slots, mixed)
        if len(parts) == 1:
            slots, pairs = to_computing_dtype(slots, mixed)
            engine.apply(rule, group, keys, slots, counts)
            write_back(pairs)
            return
        for part in parts:  # parameters sharing memory, converted one at a time
            converted, pairs = to_computing_dtype(select(slots, part))
            engine.apply(rule, group, keys, converted, [counts[i] for i in part])
            write_back(pairs)

    def apply(self, rule: UpdateRule, group: Mapping[str, Any], keys: Sequence[str],
              slots: Slots, counts: Sequence[int]) -> None:
        """Run the rule per bucket of parameters that can share one call of it."""
        for (*_, count), index in buckets(slots[0], counts, self.bucket_key).items():
            update(rule, self.ops, group, keys, select(slots, index), count)

    def bucket_key(self, param: Tensor, count: int) -> Hashable:
        return (param.device, param.dtype, count)

    def codec(self) -> Codec:
        """How this engine loads and stores formatted state (the torch definition)."""
        return TORCH_OPS

    def fallback(self) -> Engine:
        """The engine for what this one cannot run (e.g. DTensors left whole)."""
        return self

    def elementwise(self, body: Callable[..., None], slots: Slots) -> None:
        """``body(ops, *lists)`` over ``slots`` (e.g. Lookahead's sync)."""
        slots, distributed_left = as_local(slots)
        slots = [[real(x) for x in xs] for xs in slots]
        engine = self.fallback() if distributed_left else self
        engine.apply_elementwise(body, slots)

    def apply_elementwise(self, body: Callable[..., None], slots: Slots) -> None:
        for _, index in buckets(slots[0], [0] * len(slots[0]), self.bucket_key).items():
            body(self.ops, *select(slots, index))

    def forget(self) -> None:
        """Drop whatever is kept between steps (after a checkpoint load)."""


def check_sparse(rule: UpdateRule, group: Mapping[str, Any], owner: str,
                 params: Sequence[Tensor]) -> None:
    """Raise ``RuntimeError`` unless ``rule`` can step ``params``' sparse gradients."""
    rule.check_sparse(group, owner)
    for p in params:
        grad = cast(Tensor, p.grad)
        if grad.layout != torch.sparse_coo or p.is_complex() or p.layout != torch.strided:
            raise RuntimeError(
                f"{owner}: sparse gradients must be sparse COO tensors of dense real parameters, "
                f"got a {grad.layout} gradient of a {p.dtype} {p.layout} parameter"
            )
        if grad.shape != p.shape:
            raise RuntimeError(
                f"{owner}: gradient shape {tuple(grad.shape)} does not match parameter shape "
                f"{tuple(p.shape)}"
            )


def run_sparse(step: GroupStep) -> None:
    """The rule's sparse update, parameter by parameter (on every engine: sparse gradients
    touch a few rows, which no list kernel helps with)."""
    rule, group = step.rule, step.group
    keys = rule.state_keys(group)
    key_set = frozenset(keys)
    entries = [states_.state_of(step.state[p], p, group, rule, key_set) for p in step.sparse]
    counts = states_.advance_steps_([entry["step"] for entry in entries])
    for p, entry, count in zip(step.sparse, entries, counts):
        # A gradient or state of another dtype: computed in the wider one, as dense steps are
        (p_, grad, *state), pairs = to_computing_dtype(
            [[p], [cast(Tensor, p.grad)], *([entry[k]] for k in keys)])
        rule.sparse_update_(p_[0], grad[0], {k: x[0] for k, x in zip(keys, state)}, group, count)
        write_back(pairs)


def update(rule: UpdateRule, ops: TensorListOps, group: Mapping[str, Any], keys: Sequence[str],
           slots: Slots, count: int) -> None:
    params, grads, *state = slots
    rule.update_(ops, params, grads, dict(zip(keys, state)), group, count)


def buckets(params: Sequence[Tensor], counts: Sequence[int],
            key: Callable[[Tensor, int], Hashable]) -> dict[Any, list[int]]:
    """Indices of the parameters that share a key (the last element of a key is the count)."""
    keys = [key(p, count) for p, count in zip(params, counts)]
    if len(set(keys)) == 1:
        return {keys[0]: list(range(len(keys)))}
    grouped: dict[Any, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        grouped[k].append(i)
    return grouped
