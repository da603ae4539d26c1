"""A group's tensors as its rule computes them, where the group stores them in a format
(:mod:`rectified.formats`): loaded into float32 (float64) before the rule runs, stored back
after it, with the random bits of each (seed, step, parameter) for stochastic rounding."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from rectified import formats
from rectified.engines.tensors import Slots
from rectified.formats import rounding
from rectified.rules.moments import MOMENT_KINDS


class Loaded:
    """``slots`` (params, grads, state lists) with the formatted tensors replaced by working
    copies; :meth:`store_` writes them back."""

    def __init__(self, storage: formats.Storage, group: Mapping[str, Any], slots: Slots,
                 entries: Sequence[dict[str, Any]], keys: Sequence[str],
                 counts: Sequence[int]) -> None:
        self.storage, self.keys = storage, list(keys)
        self.slots = [list(xs) for xs in slots]
        self.loaded: list[tuple[int, str | None, bool, dict[str, Any], int]] = []
        positions = {id(p): i for i, p in enumerate(group["params"])}
        for i, (p, entry, count) in enumerate(zip(slots[0], entries, counts)):
            encoded, stochastic = storage.encoded(p), storage.rounds_stochastically(p)
            if encoded is None and not stochastic:
                continue
            dtype = torch.float64 if p.dtype == torch.float64 else torch.float32
            if stochastic:
                self.slots[0][i] = p.detach().to(dtype, copy=True)
                self.slots[1][i] = slots[1][i].to(dtype)
            if encoded is not None:
                for j, key in enumerate(self.keys):
                    if key in MOMENT_KINDS:
                        self.slots[2 + j][i] = formats.load(entry, key, dtype)
            tensor = positions.get(id(p), i)
            self.loaded.append((i, encoded, stochastic, entry, rounding.stream_key(
                storage.seed, count, tensor)))

    def store_(self, params: Sequence[Tensor]) -> None:
        for i, encoded, stochastic, entry, key in self.loaded:
            working = self.slots[0][i]
            bits = rounding.element_bits(key, working.numel(), working.device)
            if stochastic:
                params[i].copy_(rounding.to_bfloat16_stochastic(
                    working, rounding.parameter_bits(bits)))
            if encoded is None:
                continue
            for j, name in enumerate(self.keys):
                if name not in MOMENT_KINDS:
                    continue
                random16 = (rounding.first_moment_bits(bits) if name == "exp_avg" else
                            rounding.second_moment_bits(bits) if name == "exp_avg_sq" else None)
                formats.store(entry, name, self.slots[2 + j][i], encoded, working.dtype,
                              random16)
