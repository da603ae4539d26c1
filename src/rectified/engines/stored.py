"""A group's tensors as its rule computes them, where the group stores them in a format
(:mod:`rectified.formats`): loaded into float32 (float64) before the rule runs, stored back
after it, with the random bits of each (seed, step, parameter) for stochastic rounding.

Loading and storing follow the definitions of :mod:`rectified.formats` in torch operations; an
engine may hand in a :class:`Codec` that computes the same bits faster where it can (the fused
engine's kernel), and answers None or False where it cannot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from rectified import formats
from rectified.engines.tensors import Slots, local_shards
from rectified.formats import rounding, sharded
from rectified.rules.moments import MOMENT_KINDS


class Codec:
    """Decoding and encoding as :mod:`rectified.formats` defines them; this one declines all."""

    def decode(self, entry: Mapping[str, Any], key: str, dtype: torch.dtype) -> Tensor | None:
        return None

    def store(self, entry: dict[str, Any], key: str, value: Tensor, encoded: str,
              stream: int, bits: str | None) -> bool:
        """Store ``value`` as moment ``key`` rounded with the stream's ``bits`` ("low",
        "high", or None: to nearest); False if not done."""
        return False

    def round_param(self, value: Tensor, param: Tensor, stream: int) -> bool:
        return False


TORCH_OPS = Codec()
BITS = {"exp_avg": "low", "exp_avg_sq": "high"}  # the running max rounds to nearest


def positions_in(group: Mapping[str, Any], params: Sequence[Tensor]) -> list[int]:
    """Each parameter's position in its group: the tensor field of its rounding stream."""
    where = {id(p): i for i, p in enumerate(group["params"])}
    return [where.get(id(p), i) for i, p in enumerate(params)]


class Stored(NamedTuple):  # a tuple: made for every parameter at every step
    """How one parameter's step loads and stores: its moments' format ("8bit", "bfloat16",
    None), whether the parameter itself rounds stochastically, and its rounding stream's
    fields: its position in the group, and the index in the whole tensor of its first element
    (a DTensor shard's offset, see :mod:`rectified.formats.sharded`)."""

    encoded: str | None
    stochastic: bool
    position: int
    offset: int = 0

    def stream(self, seed: int, count: int) -> int:
        key = rounding.stream_key(seed, count, self.position)
        return (key + self.offset * rounding.GOLDEN) & rounding.WORD


def stored(storage: formats.Storage, group: Mapping[str, Any],
           params: Sequence[Tensor]) -> list[Stored]:
    """How each of ``params`` (as the group holds them: DTensors whole) is stored."""
    positions = positions_in(group, params)
    if not sharded.any_dtensor(params):
        return [Stored(storage.encoded(p), storage.rounds_stochastically(p), position)
                for p, position in zip(params, positions)]
    return [Stored(storage.encoded(p), storage.rounds_stochastically(p), position,
                   sharded.flat_offset(p)) for p, position in zip(params, positions)]


def check_layouts(owner: str, how: Sequence[Stored], params: Sequence[Tensor],
                  state: Mapping[Tensor, Mapping[str, Any]], keys: Sequence[str]) -> None:
    """Raise ``RuntimeError`` (before anything moves) for a DTensor parameter whose formatted
    step cannot run on its local shard: its gradient or state laid out otherwise, or 8-bit
    scales that name another shard (a checkpoint of another sharding)."""
    if not sharded.any_dtensor(params):
        return
    for position, (p, stored_as) in enumerate(zip(params, how)):
        if not sharded.is_dtensor(p) or not (stored_as.encoded or stored_as.stochastic):
            continue
        entry = state.get(p) or {}
        column = [p, p.grad, *(entry[k] for k in keys if isinstance(entry.get(k), Tensor))]
        if local_shards(column) is None:
            raise RuntimeError(
                f"{owner}: parameter {position} is a DTensor stored as "
                f"state_format={stored_as.encoded!r} (stochastic rounding of the parameter: "
                f"{stored_as.stochastic}), but its gradient or state is not a DTensor laid out "
                "as it is (same mesh and placements, none partial): formatted state steps "
                "each rank's shard alone"
            )
        for key in keys:
            scales = entry.get(formats.scales_key(key))
            if sharded.is_dtensor(scales) and sharded.blocked_elsewhere(scales, p):
                raise RuntimeError(
                    f"{owner}: the 8-bit state {key!r} of parameter {position} was blocked "
                    "under another sharding than the parameter's (a checkpoint of another "
                    "sharding?): its codes and scales no longer belong together. Load an 8-bit "
                    "checkpoint of sharded parameters into the sharding it was saved from "
                    "(docs/optimizers.md, \"State formats\")"
                )


class Local:
    """A formatted group's slots and state entries with each DTensor parameter whose tensors
    are laid out alike replaced by its local shard (:mod:`rectified.formats.sharded`);
    :meth:`write_back` brings what the step stored into the DTensor state."""

    def __init__(self, slots: Slots, entries: Sequence[dict[str, Any]]) -> None:
        self.slots, self.entries = slots, list(entries)
        self.sharded: list[tuple[dict[str, Any], dict[str, Any], Tensor]] = []
        if not sharded.any_dtensor(slots[0]):
            return
        self.slots = [list(xs) for xs in slots]
        for i, p in enumerate(slots[0]):
            shards = local_shards([xs[i] for xs in slots]) if sharded.is_dtensor(p) else None
            if shards is None:
                continue
            for s, shard in enumerate(shards):
                self.slots[s][i] = shard
            local = sharded.local_entry(entries[i], p)
            self.sharded.append((local, entries[i], p))
            self.entries[i] = local

    def write_back(self) -> None:
        for local, entry, param in self.sharded:
            sharded.write_back(local, entry, param)


class Loaded:
    """``slots`` (params, grads, state lists) with the formatted tensors replaced by working
    copies; :meth:`store_` writes them back."""

    def __init__(self, storage: formats.Storage, params: Sequence[Stored], slots: Slots,
                 entries: Sequence[dict[str, Any]], keys: Sequence[str],
                 counts: Sequence[int], codec: Codec = TORCH_OPS) -> None:
        self.storage, self.keys, self.codec = storage, list(keys), codec
        self.slots = [list(xs) for xs in slots]
        self.loaded: list[tuple[int, str | None, bool, dict[str, Any], int]] = []
        for i, (p, entry, count, how) in enumerate(zip(slots[0], entries, counts, params)):
            encoded, stochastic = how.encoded, how.stochastic
            if encoded is None and not stochastic:
                continue
            dtype = torch.float64 if p.dtype == torch.float64 else torch.float32
            if stochastic:
                self.slots[0][i] = p.detach().to(dtype, copy=True)
                self.slots[1][i] = slots[1][i].to(dtype)
            if encoded is not None:
                for j, key in enumerate(self.keys):
                    if key in MOMENT_KINDS:
                        decoded = codec.decode(entry, key, dtype)
                        self.slots[2 + j][i] = decoded if decoded is not None else formats.load(
                            entry, key, dtype)
            self.loaded.append((i, encoded, stochastic, entry, how.stream(storage.seed, count)))

    def store_(self, params: Sequence[Tensor]) -> None:
        for i, encoded, stochastic, entry, stream in self.loaded:
            working = self.slots[0][i]
            bits = _LazyBits(stream, working)
            if stochastic and not self.codec.round_param(working, params[i], stream):
                params[i].copy_(rounding.to_bfloat16_stochastic(
                    working, rounding.parameter_bits(bits.get())))
            if encoded is None:
                continue
            for j, name in enumerate(self.keys):
                if name not in MOMENT_KINDS:
                    continue
                value, which = self.slots[2 + j][i], BITS.get(name)
                if self.codec.store(entry, name, value, encoded, stream, which):
                    continue
                random16 = None if which is None else (
                    rounding.first_moment_bits(bits.get()) if which == "low"
                    else rounding.second_moment_bits(bits.get()))
                formats.store(entry, name, value, encoded, working.dtype, random16)


class _LazyBits:
    """A parameter's random bits in the torch definition, made when first needed."""

    def __init__(self, stream: int, like: Tensor) -> None:
        self.stream, self.like = stream, like
        self.bits: Tensor | None = None

    def get(self) -> Tensor:
        if self.bits is None:
            self.bits = rounding.element_bits(self.stream, self.like.numel(), self.like.device)
        return self.bits
