"""Formatted state of DTensor parameters (FSDP2's ``fully_shard``, tensor parallelism): each
rank blocks its own local shard.

A DTensor parameter whose placements are plain ``Shard(d)`` and ``Replicate()`` keeps its
moments as DTensors laid out like it: 8-bit codes (uint8) or bfloat16 values of the parameter's
global shape, so that every rank holds the codes of its own elements. The blocks of 256 that
share a scale are taken within each local shard (flattened), never across two ranks, so a step
needs no communication. The scales of one moment are one DTensor of shape
``(shards along each sharded mesh dimension..., most blocks of any shard)``, sharded over those
mesh dimensions (replicated over the others): each rank's row holds its shard's scales, then
zeros, then two numbers that name the shard (a hash of its shape and place in the whole tensor).
Saving and loading with ``torch.distributed.checkpoint`` moves codes and scales as it moves any
DTensor; the codes only mean something next to the scales of the same sharding, so an 8-bit
checkpoint of sharded parameters loads into the same sharding: into another one, the scales'
shape differs (refused on load) or the rows name other shards (refused before the next step,
:func:`blocked_elsewhere`).

Element j of a local shard draws the random bits of the element of the whole tensor where the
shard begins (in row-major order) plus j: with ``Shard(0)``, exactly the bits of the unsharded
parameter's element.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from rectified.formats import codes, rounding

NAME = 2  # the last elements of a scales row: which shard its blocks belong to


def _dtensor() -> Any:
    """``torch.distributed.tensor`` if it was imported; else None (then no tensor can be a
    DTensor, and the import, half a second, is not paid)."""
    return sys.modules.get("torch.distributed.tensor")


def is_dtensor(tensor: Any) -> bool:
    module = _dtensor()
    return module is not None and isinstance(tensor, module.DTensor)


def any_dtensor(tensors: Iterable[Any]) -> bool:
    module = _dtensor()
    return module is not None and any(isinstance(t, module.DTensor) for t in tensors)


def blockable(param: Tensor) -> bool:
    """Whether ``param`` is a DTensor whose local shard the formats can block: real floating
    point, placed by plain ``Shard`` and ``Replicate`` only (no pending reduction, no strided
    shard), and its local shard the one those placements say."""
    module = _dtensor()
    if module is None or not isinstance(param, module.DTensor):
        return False
    plain = (module.Shard, module.Replicate)
    if not param.is_floating_point() or any(type(p) not in plain for p in param.placements):
        return False
    local = param.to_local()
    return type(local) is Tensor and tuple(local.shape) == _local_shape_and_offset(param)[0]


def _local_shape_and_offset(param: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    mesh = param.device_mesh
    return _shard_of(tuple(mesh.shape), tuple(mesh.get_coordinate() or [0] * mesh.ndim),
                     tuple(param.placements), tuple(param.shape))


@functools.lru_cache(maxsize=4096)  # asked for every DTensor parameter at every step
def _shard_of(mesh_shape: tuple[int, ...], coordinate: tuple[int, ...],
              placements: tuple[Any, ...],
              whole: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The shape of the shard at ``coordinate`` of a mesh of ``mesh_shape`` of a tensor of
    shape ``whole`` placed by ``placements``, and the index of its first element
    (torch.chunk's split along each sharded dimension, mesh dimension by mesh dimension)."""
    shape, offset = list(whole), [0] * len(whole)
    for mesh_dim, placement in enumerate(placements):
        if not placement.is_shard():
            continue
        dim, size = placement.dim, shape[placement.dim]
        chunk = math.ceil(size / mesh_shape[mesh_dim]) if size else 0
        start = min(chunk * coordinate[mesh_dim], size)
        shape[dim] = min(chunk, size - start)
        offset[dim] += start
    return tuple(shape), tuple(offset)


def flat_offset(param: Tensor) -> int:
    """Where this rank's shard of ``param`` begins in the whole tensor, in row-major order
    (0 for a tensor that is not a DTensor)."""
    if not is_dtensor(param):
        return 0
    _, offset = _local_shape_and_offset(param)
    stride = 1
    flat = 0
    for index, size in zip(reversed(offset), reversed(param.shape)):
        flat += index * stride
        stride *= size
    return flat


def _scales_layout(param: Any) -> tuple[tuple[int, ...], list[Any]]:
    """The global shape and the placements of ``param``'s scales (see the module docstring)."""
    module = _dtensor()
    mesh = param.device_mesh
    shape: list[int] = []
    placements: list[Any] = []
    most = list(param.shape)
    for mesh_dim, placement in enumerate(param.placements):
        if placement.is_shard():
            placements.append(module.Shard(len(shape)))
            shape.append(mesh.size(mesh_dim))
            size = most[placement.dim]
            most[placement.dim] = math.ceil(size / mesh.size(mesh_dim)) if size else 0
        else:
            placements.append(module.Replicate())
    return (*shape, codes.scale_count(math.prod(most)) + NAME), placements


def scales_shape(param: Tensor) -> tuple[int, ...]:
    """The shape of the scales of one 8-bit moment of ``param``."""
    if is_dtensor(param):
        return _scales_layout(param)[0]
    return (codes.scale_count(param.numel()),)


def zero_scales(param: Any) -> Tensor:
    """Zero scales for one 8-bit moment of the DTensor ``param`` (every rank's row)."""
    module = _dtensor()
    shape, placements = _scales_layout(param)
    local = torch.zeros((1,) * (len(shape) - 1) + (shape[-1],), device=param.to_local().device)
    local.view(-1)[-NAME:] = torch.tensor(_shard_name(param))
    return module.DTensor.from_local(local, param.device_mesh, placements, run_check=False,
                                     shape=torch.Size(shape),
                                     stride=torch.empty(shape, device="meta").stride())


def _shard_name(param: Any) -> list[float]:
    """Two numbers (whole, below 2^16: exact in float32) naming this rank's shard of ``param``:
    a hash of its shape and of the index of its first element."""
    shape, offset = _local_shape_and_offset(param)
    key = 0
    for word in (*shape, *offset):
        key = rounding.fmix32(rounding.fmix32(key ^ word) ^ (word >> 32))
    return [float(key >> 16), float(key & 0xFFFF)]


def blocked_elsewhere(scales: Any, param: Any) -> bool:
    """Whether a moment's scales (a DTensor) name another shard than this rank's shard of
    ``param``: 8-bit state loaded from a checkpoint of another sharding, whose codes the
    distributed checkpoint moved to other ranks while each row of scales stayed a row."""
    row = scales.to_local().reshape(-1)
    return row.numel() < NAME or row[-NAME:].tolist() != _shard_name(param)


def local_scales(scales: Any, local_numel: int) -> Tensor:
    """The scales of this rank's shard, out of a moment's scales DTensor (a view)."""
    return scales.to_local().reshape(-1)[: codes.scale_count(local_numel)]


def like(param: Any, local: Tensor) -> Tensor:
    """A DTensor laid out as ``param`` whose local shard is ``local``."""
    return _dtensor().DTensor.from_local(local, param.device_mesh, param.placements,
                                         run_check=False, shape=param.shape,
                                         stride=param.stride())


def local_entry(entry: Mapping[str, Any], param: Any) -> dict[str, Any]:
    """A parameter's state ``entry`` with each DTensor replaced by its local shard (the scales
    by this rank's part of its row); writing into these writes into ``entry``'s tensors."""
    numel = param.to_local().numel()
    local = {}
    for key, value in entry.items():
        if not is_dtensor(value):
            local[key] = value
        elif isinstance(key, str) and key.endswith(codes.SCALES):
            local[key] = local_scales(value, numel)
        else:
            local[key] = value.to_local()
    return local


def write_back(local: Mapping[str, Any], entry: dict[str, Any], param: Any) -> None:
    """Bring what a step stored in ``local`` (from :func:`local_entry`) into ``entry``: a
    tensor replaced there is copied into the shard it stands for; a tensor of a new key (state
    converted into another format) becomes a DTensor laid out as ``param`` (8-bit scales: as
    :func:`zero_scales` lays them out)."""
    numel = param.to_local().numel()
    for key, value in local.items():
        current = entry.get(key)
        scales = isinstance(key, str) and key.endswith(codes.SCALES)
        if not isinstance(value, Tensor) or (key in entry and not is_dtensor(current)):
            entry[key] = value  # numbers and plain tensors (step counters) are shared as they are
            continue
        if current is None and scales:
            current = entry[key] = zero_scales(param)
        elif current is None:
            entry[key] = like(param, value)
            continue
        shard = local_scales(current, numel) if scales else current.to_local()  # type: ignore[union-attr]
        if value is shard:
            continue
        if value.dtype == shard.dtype and value.shape == shard.shape:
            shard.copy_(value)
        else:  # another format now (a group's state_format changed): a new DTensor
            entry[key] = like(param, value)
    for key in [k for k in entry if k not in local]:
        del entry[key]
