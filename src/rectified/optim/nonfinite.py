"""The non-finite check of ``skip_nonfinite``: whether a step's gradients are all finite, agreed
on by every rank that holds a shard of them."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor

from rectified.engines import is_distributed


def all_finite(tensors: list[Tensor]) -> bool:
    """Whether no tensor holds a NaN or an infinity (one host read for the whole list).

    DTensors are checked on their local shards and the answer is agreed on by every rank of
    their device meshes, so all ranks skip a step together.
    """
    distributed: list[Any] = [t for t in tensors if is_distributed(t)]
    meshes = {id(t.device_mesh): t.device_mesh for t in distributed}
    local = [cast(Any, t).to_local() if is_distributed(t) else t for t in tensors]
    local = [t for t in local if t.numel() > 0]
    # The max-abs norm is NaN or inf exactly when the tensor holds one.
    finite = (
        torch.stack(torch._foreach_norm(local, float("inf"))).isfinite().all()
        if local
        else torch.tensor(True)
    )
    if meshes:
        finite = _agree_on_meshes(finite, list(meshes.values()))
    return bool(finite)


def _agree_on_meshes(finite: Tensor, meshes: list[Any]) -> Tensor:
    """The logical AND of ``finite`` over every rank of ``meshes`` (an all-reduce of the min)."""
    import torch.distributed as dist

    for mesh in meshes:
        device = torch.device(mesh.device_type)
        if device.type == "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
        flag = finite.to(device=device, dtype=torch.int32).reshape(1)
        for dim in range(mesh.ndim):
            dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=mesh.get_group(dim))
        finite = flag.bool().all()
    return finite
