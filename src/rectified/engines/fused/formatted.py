"""Adam-family steps over stored moments in one kernel pass (``csrc/one_pass.h``): the fused
engine's path for groups with ``state_format="8bit"`` or ``"bfloat16"``.

A parameter takes it when its step is one ``adam_step_`` or ``bounded_step_`` (Adam, AdamW,
AMSGrad, RAdam, AdaBound, AMSBound; not NAdam, whose step is a composition of primitives), it
is a plain contiguous float32 or bfloat16 CPU tensor with a gradient of its dtype, and its
moments are already stored in the format (the first step, which makes them, runs through the
general path). The kernel decodes, steps and encodes each block of 256 while it is in cache;
the random bits and codes are those of :mod:`rectified.formats`, so the result is the general
path's (load, the kernel's loop for the operation, store) to the last bit, which the tests
check. The kernel is a library of its own, built on the first step that needs it.

A group whose every parameter took one call keeps it (:class:`FormattedPlan`, as
:mod:`.plans` keeps a plain group's step): with 1,000 parameters of 10k elements the Python
work around the kernel fell from 6.7 ms to 1.5 ms a step (kernel: 9 ms).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor

from rectified import formats
from rectified.engines.engine import update
from rectified.engines.fused import kernel
from rectified.engines.fused.plans import GroupPlan
from rectified.engines.fused.program import instructions, trace
from rectified.engines.stored import Codec, Stored, stored
from rectified.engines.tensors import Slots, overlapping, select
from rectified.formats import sharded
from rectified.rules.base import UpdateRule

DTYPES = (torch.float32, torch.bfloat16)
KEYS = (["exp_avg", "exp_avg_sq"], ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"])


def _takes(p: Tensor, g: Tensor, entry: Mapping[str, Any], how: Stored,
           pairs: Sequence[tuple[str, str]]) -> bool:
    """Whether the kernel may take this parameter: formatted, a float32 or bfloat16 CPU tensor
    with a gradient of its dtype, its moments already in the format (the kernel checks the rest
    before it writes anything)."""
    return (how.encoded is not None and p.dtype in DTYPES and g.dtype is p.dtype and p.is_cpu
            and _stored_as(entry, pairs, how.encoded))


def _with_scales(slots: Slots, entries: Sequence[Mapping[str, Any]], index: Sequence[int],
                 pairs: Sequence[tuple[str, str]], eight_bit: bool) -> Slots:
    """The slots of parameters ``index``, and their scales (whose memory must not overlap
    anything the kernel writes either)."""
    return select(slots, list(index)) + (
        [[entries[i][scales] for i in index] for _, scales in pairs] if eight_bit else [])


def _stored_as(entry: Mapping[str, Any], pairs: Sequence[tuple[str, str]], encoded: str) -> bool:
    """Whether every moment of ``entry`` (``pairs``: its key and its scales' key) is already
    stored in ``encoded`` (the kernel checks the rest, layout and sizes, before it writes
    anything). A loop, not all() over a generator: it runs for every parameter at every step."""
    eight_bit = encoded == "8bit"
    dtype = torch.uint8 if eight_bit else torch.bfloat16
    for key, scales in pairs:
        if getattr(entry.get(key), "dtype", None) is not dtype or (scales in entry) != eight_bit:
            return False
    return True


def _one_step(rule: UpdateRule, group: Mapping[str, Any], keys: Sequence[str],
              n_slots: int, count: int) -> tuple[str, tuple[float, ...]] | None:
    """(operation, scalars) of the group's step at ``count`` if it is exactly one
    ``adam_step_`` or ``bounded_step_`` over the input slots in order (params, grads, m, v[,
    max])."""
    def body(ops, *lists) -> None:
        update(rule, ops, group, keys, list(lists), count)

    code = instructions(trace(body, n_slots))
    if len(code) != 1 or code[0][0] not in ("adam_step_", "bounded_step_"):
        return None
    registers = tuple(r for r in code[0][1] if r != -1)
    return (code[0][0], code[0][2]) if registers == tuple(range(n_slots)) else None


def run_(rule: UpdateRule, group: Mapping[str, Any], keys: Sequence[str], slots: Slots,
         entries: Sequence[dict[str, Any]], counts: Sequence[int], how: Sequence[Stored],
         storage: formats.Storage) -> list[int]:
    """Step the parameters the kernel takes; return the indices of the others, untouched."""
    n = len(slots[0])
    if not kernel.is_loaded() or list(keys) not in KEYS:
        return list(range(n))
    calls: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    if not any(p.is_cpu and h.encoded for p, h in zip(slots[0], how)) or not kernel.load_formats():
        return list(range(n))
    left = []
    pairs = [(key, formats.scales_key(key)) for key in keys]
    for i, (p, g) in enumerate(zip(slots[0], slots[1])):
        if not _takes(p, g, entries[i], how[i], pairs):
            left.append(i)
            continue
        calls[(counts[i], how[i].encoded, p.dtype, how[i].stochastic)].append(i)
    for (count, encoded, _, stochastic), index in calls.items():
        operation = _one_step(rule, group, keys, len(slots), count)
        if operation is None:
            left += index
            continue
        # Tensors sharing memory (the scales too) run one at a time, on the general path.
        eight_bit = encoded == "8bit"
        shared = set(overlapping(_with_scales(slots, entries, index, pairs, eight_bit), (1,)))
        left += [index[j] for j in shared]
        index = [i for j, i in enumerate(index) if j not in shared]
        if not index:
            continue
        moments = [entries[i][key] for i in index for key in keys]
        scales = [entries[i][key] for i in index for _, key in pairs] if eight_bit else []
        try:
            kernel.formatted_step_(
                operation[0], [slots[0][i] for i in index], [slots[1][i] for i in index],
                moments, scales, len(keys), eight_bit, stochastic, storage.seed, count,
                [how[i].position for i in index], [how[i].offset for i in index], operation[1])
        except RuntimeError:  # a tensor it cannot read (a view, a subclass): nothing was written
            left += index
    return sorted(left)


def _plain(tensor: Tensor, dtype: torch.dtype) -> bool:
    return (tensor.dtype is dtype and tensor.is_cpu and tensor.is_contiguous()
            and type(tensor) in (Tensor, torch.nn.Parameter) and not tensor.is_neg())


class KernelCodec(Codec):
    """The formats' definitions computed by the kernel (``csrc/codecs.h``, bit for bit), for
    float32 values of plain CPU tensors once the kernel is built; the rest is declined."""

    def decode(self, entry: Mapping[str, Any], key: str, dtype: torch.dtype) -> Tensor | None:
        codes, scales = entry[key], entry.get(formats.scales_key(key))
        if (dtype is not torch.float32 or scales is None or not _plain(codes, torch.uint8)
                or not _plain(scales, torch.float32) or not kernel.load_formats()):
            return None
        out = torch.empty(codes.shape, dtype=torch.float32)
        kernel.decode_codes_(codes, scales, out, formats.MOMENT_KINDS[key] == "signed")
        return out

    def store(self, entry: dict[str, Any], key: str, value: Tensor, encoded: str,
              stream: int, bits: str | None) -> bool:
        if not _plain(value, torch.float32) or not kernel.load_formats():
            return False
        current, scales_key = entry.get(key), formats.scales_key(key)
        if encoded == "8bit":
            count = formats.codes.scale_count(value.numel())
            codes = current if isinstance(current, Tensor) and _plain(current, torch.uint8) and (
                current.shape == value.shape) else torch.empty(value.shape, dtype=torch.uint8)
            scales = entry.get(scales_key)
            if not (isinstance(scales, Tensor) and _plain(scales, torch.float32)
                    and scales.shape == (count,)):
                scales = torch.empty(count, dtype=torch.float32)
            kernel.encode_codes_(value, codes, scales, formats.MOMENT_KINDS[key] == "signed",
                                 stream, {"low": 0, "high": 16, None: -1}[bits])
            entry[key], entry[scales_key] = codes, scales
            return True
        if encoded != "bfloat16":
            return False
        out = current if isinstance(current, Tensor) and _plain(current, torch.bfloat16) and (
            current.shape == value.shape) else torch.empty(value.shape, dtype=torch.bfloat16)
        kernel.round_bfloat16_(value, out, stream, {"low": 0, "high": 1, None: 3}[bits])
        entry.pop(scales_key, None)
        entry[key] = out
        return True

    def round_param(self, value: Tensor, param: Tensor, stream: int) -> bool:
        if not (_plain(value, torch.float32) and _plain(param, torch.bfloat16)
                and kernel.load_formats()):
            return False
        kernel.round_bfloat16_(value, param.detach(), stream, 2)
        return True


KERNEL_CODEC = KernelCodec()


class FormattedPlan(GroupPlan):
    """A formatted group's one-pass step kept between steps, as :class:`GroupPlan` keeps a
    plain group's: made after a step in which every parameter could take one kernel call. A
    later step checks that the group, its state entries and every state tensor (scales
    included) are the objects and the memory the plan holds and that the group stores state as
    it did; the C++ side checks gradients and counters; the step is traced (so schedules
    apply) and the kept lists go to the kernel. Any failed check sends the step down the
    general path, which makes a new plan."""

    def __init__(self, group: Mapping[str, Any], params: Sequence[Tensor],
                 states: Sequence[dict[str, Any]], keys: Sequence[str], count: int,
                 storage: formats.Storage, how: Sequence[Stored]) -> None:
        super().__init__(group, params, states, keys, count)
        self.storage, self.encoded, self.stochastic = storage, how[0].encoded, how[0].stochastic
        self.eight_bit = self.encoded == "8bit"
        scales = [formats.scales_key(key) for key in keys] if self.eight_bit else []
        self.tensors.update({key: tuple(s[key] for s in states) for key in scales})
        self.moments = [s[key] for s in states for key in keys]
        self.scales = [s[key] for s in states for key in scales]
        self.positions = [h.position for h in how]
        self.offsets = [h.offset for h in how]
        self.operation: tuple[str, tuple[float, ...]] | None = None

    @classmethod
    def make(cls, group: Mapping[str, Any], params: Sequence[Tensor],  # type: ignore[override]
             states: Sequence[dict[str, Any]], keys: Sequence[str], counts: Sequence[int],
             storage: formats.Storage, rule: UpdateRule) -> FormattedPlan | None:
        """A plan for the step just taken, or None unless the kernel takes every parameter in
        one call: the formats' kernel built, the rule's step one operation, one step count,
        one format and rounding, plain CPU tensors of one dtype, the moments already in their
        format, no memory shared, no DTensor."""
        if (not params or len(set(counts)) != 1 or not kernel.is_loaded()
                or list(keys) not in KEYS or sharded.any_dtensor(params)
                or not kernel.load_formats()
                or _one_step(rule, group, keys, 2 + len(keys), counts[0] + 1) is None):
            return None
        how = stored(storage, group, params)
        pairs = [(key, formats.scales_key(key)) for key in keys]
        grads = [cast(Tensor, p.grad) for p in params]
        if (len({(h.encoded, h.stochastic) for h in how}) != 1
                or len({p.dtype for p in params}) != 1
                or not all(_takes(p, g, s, h, pairs) and _plain(p, p.dtype) and _plain(g, p.dtype)
                           for p, g, s, h in zip(params, grads, states, how))):
            return None
        slots = [list(params), grads, *([s[key] for s in states] for key in keys)]
        index = range(len(params))
        if overlapping(_with_scales(slots, states, index, pairs, how[0].encoded == "8bit"),
                       (1,)):
            return None
        plan = cls(group, params, states, keys, counts[0], storage, how)
        plan.hand_over()
        return plan

    def usable(self, rule: UpdateRule, group: Mapping[str, Any]) -> bool:
        """The group stores state as when planned, :meth:`ready` (the kernel's plan also finds
        every moment and scale with the memory, sizes and dtype it had: ``.data`` not replaced,
        not reshaped in place), and the step is still one operation."""
        if formats.storage_of(group) != self.storage or not self.ready():
            return False
        self.operation = _one_step(rule, group, self.keys, 2 + len(self.keys), self.count + 1)
        return self.operation is not None

    def hand_over(self) -> None:
        # The C++ plan checks parameters and gradients (2 slots), and the moments and scales.
        self._handle = kernel.plan([t for p in self.params for t in (p, p)],
                                   list(self.tensors["step"]), list(self.frozen), 2,
                                   [*self.moments, *self.scales])

    def step_(self, rule: UpdateRule, group: Mapping[str, Any]) -> bool:
        if self.operation is None or not self._handle.counts_hold(float(self.count)):
            return False
        count = self.count + 1
        name, scalars = self.operation
        try:
            kernel.formatted_step_(
                name, list(self.params), self.grads, self.moments, self.scales,
                len(self.keys), self.eight_bit, self.stochastic, self.storage.seed, count,
                self.positions, self.offsets, scalars)
        except RuntimeError:  # checked before anything was written: the general path runs
            return False
        kernel.advance_steps_(list(self.tensors["step"]))
        self.count, self.operation = count, None
        return True
