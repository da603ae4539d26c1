"""Data-parallel training under ``torchrun``: gloo on CPU, nccl on GPU.

Every process builds the same model from the same seed and draws the same global batch; rank r
trains on the r-th contiguous slice of it. DistributedDataParallel averages the gradients, and
the mean of equal-sized slices' mean losses is the global batch's mean loss, so a step equals
the single-process step on the global batch up to floating-point summation order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor, nn

CPU = torch.device("cpu")


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    device: torch.device = CPU

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_environment() -> Context:
    """Join the process group torchrun describes, or a one-process context without torchrun."""
    if not launched_by_torchrun():
        return Context(device=default_device())
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Context(dist.get_rank(), dist.get_world_size(), device)


def shutdown(context: Context) -> None:
    if context.is_distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def wrap(model: nn.Module, context: Context) -> nn.Module:
    """``model`` inside DistributedDataParallel when there is more than one process."""
    if not context.is_distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def shard(tensor: Tensor, context: Context) -> Tensor:
    """This rank's contiguous slice of a global batch (the batch must divide evenly)."""
    if not context.is_distributed:
        return tensor
    size = tensor.shape[0] // context.world_size
    return tensor[context.rank * size : (context.rank + 1) * size]


def mean_across(value: Tensor, context: Context) -> Tensor:
    """The mean of a scalar over all processes (for logging the global batch's loss)."""
    if not context.is_distributed:
        return value
    import torch.distributed as dist

    total = value.detach().clone()
    dist.all_reduce(total)
    return total / context.world_size


def barrier(context: Context) -> None:
    if context.is_distributed:
        import torch.distributed as dist

        dist.barrier()
