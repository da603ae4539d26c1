"""State formats: how an optimizer's moments (and bfloat16 parameters) are stored between steps.

A format never changes the rule: a step loads the stored values as float32 (float64 for float64
parameters), runs the rule, and stores the results back in the format.

============  =====================================================  ==========================
``state_format``  moments stored as                                  bytes of state / parameter
============  =====================================================  ==========================
None          the parameter's dtype, or ``state_dtype``              8 for float32 (Adam)
"float32"     float32 (``state_dtype=torch.float32``)                 8
"bfloat16"    bfloat16, rounded stochastically                        4
"8bit"        8-bit codes + a float32 scale per 256 (:mod:`.codes`),  2.03
              rounded stochastically; tensors under ``min_8bit_size``
              elements keep float32 state
============  =====================================================  ==========================

Only the moments the rule names (:data:`rectified.rules.moments.MOMENT_KINDS`: m, v and
AMSGrad's max of v) take a format; complex parameters and tensor subclasses keep float32 state
(float64 and complex128 ones their own dtype). DTensor parameters placed by ``Shard`` and
``Replicate`` (FSDP2) keep formatted state as DTensors, blocked within each rank's shard
(:mod:`.sharded`); other DTensors keep float32 state.
The running maximum of v is rounded to nearest (a stochastic maximum could fall below v).

``param_rounding="stochastic"`` stores bfloat16 parameters with stochastic rounding instead of
rounding to nearest, so updates smaller than half a bfloat16 ulp are not lost.

An 8-bit moment ``key`` is stored as ``state[key]`` (uint8 codes, the parameter's shape) and
``state[key + "_scales"]`` (float32, one per block).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rectified.formats import codes, rounding, sharded
from rectified.rules.moments import MOMENT_KINDS

STATE_FORMATS = ("float32", "bfloat16", "8bit")
PARAM_ROUNDINGS = ("nearest", "stochastic")
DEFAULT_MIN_8BIT_SIZE = 4096
SCALES = codes.SCALES
# The group keys that say how state is stored: an optimizer keeps its own across a checkpoint
# load, and converts the loaded state to them.
STORAGE_KEYS = ("state_dtype", "state_format", "min_8bit_size", "param_rounding",
                "rounding_seed")


def scales_key(key: str) -> str:
    return key + SCALES


def codes_key(key: str) -> str:
    return key[: -len(SCALES)]


def is_scales(key: Any, entry: Mapping[str, Any]) -> bool:
    """Whether ``key`` of a state ``entry`` holds the scales of an 8-bit moment."""
    return (isinstance(key, str) and key.endswith(SCALES) and codes_key(key) in MOMENT_KINDS
            and codes_key(key) in entry)


@dataclass(frozen=True)
class Storage:
    """How a group stores its state and parameters (see the module docstring)."""

    state_format: str | None
    min_8bit_size: int
    stochastic_params: bool
    seed: int

    def encoded(self, param: Tensor) -> str | None:
        """"8bit", "bfloat16" or None (plain) for ``param``'s moments."""
        if self.state_format not in ("8bit", "bfloat16"):
            return None
        if not (plain_real(param) or sharded.blockable(param)):
            _warn_kept(param, self.state_format)
            return None
        if self.state_format == "8bit" and param.numel() < self.min_8bit_size:
            return None
        return self.state_format

    def rounds_stochastically(self, param: Tensor) -> bool:
        return self.stochastic_params and param.dtype == torch.bfloat16 and (
            plain_real(param) or sharded.blockable(param))


_warned: set[str] = set()


def _warn_kept(param: Tensor, state_format: str) -> None:
    """Say once per kind of tensor that its state stays float32 (not silently)."""
    kind = "complex" if param.is_complex() else type(param.data).__name__
    if (param.is_floating_point() or param.is_complex()) and kind not in _warned:
        _warned.add(kind)
        warnings.warn(f"state_format={state_format!r}: {kind} parameters keep float32 state "
                      "(the formats take plain real tensors, and DTensors placed by Shard and "
                      "Replicate)", RuntimeWarning, stacklevel=2)


def plain_real(tensor: Tensor) -> bool:
    """A real floating-point tensor that is no subclass (a DTensor, say) under its Parameter."""
    kind = type(tensor)
    return tensor.is_floating_point() and (kind is torch.Tensor or (
        kind is torch.nn.Parameter and type(tensor.data) is torch.Tensor))


def storage_of(group: Mapping[str, Any]) -> Storage | None:
    """The group's :class:`Storage`, or None where every tensor is stored plainly (the
    engines' own dtype handling, ``state_dtype`` included, does everything)."""
    state_format = group.get("state_format")
    stochastic = group.get("param_rounding", "nearest") == "stochastic"
    if state_format in (None, "float32") and not stochastic:
        return None
    return Storage(None if state_format == "float32" else state_format,
                   group.get("min_8bit_size", DEFAULT_MIN_8BIT_SIZE), stochastic,
                   group.get("rounding_seed", 0))


def effective_state_dtype(group: Mapping[str, Any]) -> torch.dtype | None:
    """The dtype of state that is not encoded: ``state_dtype``; float32 under a
    ``state_format`` (for "bfloat16" and "8bit": the state of the tensors they leave plain, and
    fresh state before its first store); else None (the parameter's)."""
    if group.get("state_format") is not None:
        return torch.float32
    return group.get("state_dtype")


def check_storage(group: Mapping[str, Any]) -> None:
    """The storage options of a group, each alone and together (ValueError naming the value)."""
    state_format = group.get("state_format")
    if state_format is not None and state_format not in STATE_FORMATS:
        raise ValueError(f"Invalid state_format: {state_format!r} (expected None or one of "
                         f"{', '.join(map(repr, STATE_FORMATS))})")
    if state_format is not None and group.get("state_dtype") is not None:
        raise ValueError(f"state_format={state_format!r} and state_dtype="
                         f"{group['state_dtype']} both choose the state's dtype; give one")
    rounding_ = group.get("param_rounding", "nearest")
    if rounding_ not in PARAM_ROUNDINGS:
        raise ValueError(f"Invalid param_rounding: {rounding_!r} (expected 'nearest' or "
                         "'stochastic')")
    size = group.get("min_8bit_size", DEFAULT_MIN_8BIT_SIZE)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"Invalid min_8bit_size: {size!r} (expected a whole number >= 0)")
    seed = group.get("rounding_seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"Invalid rounding_seed: {seed!r} (expected a whole number in "
                         "[0, 2**64))")
    if group.get("differentiable") and (state_format in ("8bit", "bfloat16")
                                        or rounding_ == "stochastic"):
        raise ValueError("differentiable=True needs state_format None or 'float32' and "
                         "param_rounding='nearest' (rounding has no derivative)")


# -- one moment ------------------------------------------------------------------------------
def stored_moment(entry: Mapping[str, Any], key: str) -> Tensor:
    """The values of the moment ``key`` of a parameter's state ``entry`` whatever its format:
    the stored tensor itself, or 8-bit codes decoded to float32. What a reader of optimizer
    state (a monitor, an analysis) should use instead of ``entry[key]``."""
    if scales_key(key) in entry:
        return load(entry, key, torch.float32)
    return entry[key]


def load(entry: Mapping[str, Any], key: str, dtype: torch.dtype) -> Tensor:
    """The moment ``key`` of a parameter's state ``entry`` in ``dtype`` (a new tensor)."""
    value = entry[key]
    if scales_key(key) in entry and sharded.is_dtensor(value):
        return sharded.like(value, load(sharded.local_entry(entry, value), key, dtype))
    if scales_key(key) in entry:
        return codes.decode(value, entry[scales_key(key)], code_map(key)).to(dtype)
    return value.to(dtype, copy=True)


def scales_shape(param: Tensor) -> tuple[int, ...]:
    """The shape of the scales of one 8-bit moment of ``param``."""
    return sharded.scales_shape(param)


def zero_scales(param: Tensor) -> Tensor:
    """The scales of one fresh (zero) 8-bit moment of ``param``."""
    if sharded.is_dtensor(param):
        return sharded.zero_scales(param)
    return torch.zeros(codes.scale_count(param.numel()), device=param.device)


def code_map(key: str) -> codes.CodeMap:
    return codes.SIGNED if MOMENT_KINDS[key] == "signed" else codes.UNSIGNED


def store(entry: dict[str, Any], key: str, value: Tensor, encoded: str | None,
          dtype: torch.dtype, random16: Tensor | None) -> None:
    """Store ``value`` as the moment ``key`` of ``entry``: 8-bit codes, bfloat16, or ``dtype``
    (``encoded`` None). ``random16`` (None: round to nearest) are the rounding bits."""
    if encoded == "8bit":
        entry[key], entry[scales_key(key)] = codes.encode(value, code_map(key), random16)
        return
    entry.pop(scales_key(key), None)
    if encoded == "bfloat16" and random16 is not None:
        stored = rounding.to_bfloat16_stochastic(value, random16)
    else:
        stored = value.to(torch.bfloat16 if encoded == "bfloat16" else dtype)
    current = entry.get(key)
    if isinstance(current, Tensor) and current.dtype == stored.dtype and (
            current.shape == stored.shape):
        current.copy_(stored)  # keep the tensor (and its memory) the user may hold
    else:
        entry[key] = stored


def convert(entry: dict[str, Any], param: Tensor, keys: Any, storage: Storage | None,
            plain_dtype: torch.dtype) -> None:
    """Bring each moment of ``keys`` in ``entry`` into the ``storage`` the group asks for
    (rounding to nearest): loading a checkpoint of another format."""
    encoded = storage.encoded(param) if storage is not None else None
    if sharded.blockable(param) and all(sharded.is_dtensor(entry[key]) for key in keys
                                        if key in MOMENT_KINDS and key in entry):
        local = sharded.local_entry(entry, param)
        _convert(local, param.to_local(), keys, encoded, plain_dtype)  # type: ignore[attr-defined]
        sharded.write_back(local, entry, param)
    else:
        _convert(entry, param, keys, encoded, plain_dtype)


def _convert(entry: dict[str, Any], param: Tensor, keys: Any, encoded: str | None,
             plain_dtype: torch.dtype) -> None:
    for key in keys:
        if not isinstance(entry.get(key), Tensor) or key not in MOMENT_KINDS:
            continue
        stored_as = "8bit" if scales_key(key) in entry else entry[key].dtype
        target = encoded if encoded == "8bit" else (
            torch.bfloat16 if encoded == "bfloat16" else plain_dtype)
        if stored_as == target:
            continue
        value = load(entry, key, torch.float64 if plain_dtype == torch.float64
                     else torch.float32).to(param.device)
        store(entry, key, value, encoded, plain_dtype, None)
