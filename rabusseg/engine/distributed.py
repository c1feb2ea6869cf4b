"""Process-group set-up for one process per device (``torchrun``) and the single-process case.

Nothing here is global state: :func:`init_distributed` returns a :class:`DistInfo` that the
trainer passes around.  The backend is gloo on CPU and NCCL on CUDA; SyncBatchNorm is used only
when there is more than one process on CUDA (it would only slow a single process down, and
PyTorch has no CPU kernel for it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from rabusseg.devices import resolve_device


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: rank, world size and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only rank 0 logs, shows progress and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_name: str = "auto") -> DistInfo:
    """Join the process group described by torchrun's variables (``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``), or describe a single process when they are absent."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank=local_rank, key="train.device")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def cleanup_distributed() -> None:
    """Leave the process group (safe to call when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (a no-op for one process)."""
    if info.distributed:
        dist.barrier()


def convert_sync_batchnorm(model: nn.Module, info: DistInfo) -> nn.Module:
    """BatchNorm statistics over all ranks' images (batch 2 per device is tiny).

    Only on CUDA: PyTorch's SyncBatchNorm has no CPU kernel.  On CPU (gloo) each rank normalises
    with its own batch and DDP broadcasts rank 0's running statistics before every forward.
    """
    if info.distributed and info.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over ranks (used at logging time only)."""
    if info.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= info.world_size
    return values


def broadcast_object(obj: object, info: DistInfo) -> object:
    """Rank 0's value of a picklable object on every rank (e.g. a stop decision)."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
