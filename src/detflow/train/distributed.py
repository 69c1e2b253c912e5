"""Data-parallel training under ``torchrun`` (DistributedDataParallel).

``torchrun --nproc_per_node=N stages/train.py …`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in their environment; without
them everything here is a no-op for one process. Backend: NCCL on CUDA, gloo on CPU. Only
rank 0 (:func:`is_main_process`) writes checkpoints, reports and logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def is_main_process() -> bool:
    """Rank 0 of a ``torchrun`` job, or a plain single process (read from the environment,
    so it works before the process group exists)."""
    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    """Processes of a ``torchrun`` job, 1 for a plain process (read from the environment,
    so it works before the process group exists)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init(device: torch.device) -> World:
    """Join the ``torchrun`` process group (if launched by it); return this process's place.
    On CUDA each process takes the GPU of its ``LOCAL_RANK``."""
    size = world_size()
    if size == 1:
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return world


def device_for(world: World, device: torch.device) -> torch.device:
    return torch.device("cuda", world.local_rank) if device.type == "cuda" else device


def wrap(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """``model`` in DDP when distributed (again after its trainable parameters change)."""
    if not world.distributed:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def mean(values: torch.Tensor, world: World) -> torch.Tensor:
    """The element-wise mean of ``values`` over all processes."""
    if world.distributed:
        values = values.clone()
        dist.all_reduce(values)
        values /= world.size
    return values


def broadcast(values: torch.Tensor, world: World) -> torch.Tensor:
    """Rank 0's ``values`` on every process."""
    if world.distributed:
        values = values.clone()
        dist.broadcast(values, src=0)
    return values


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
