"""Multi-GPU/multi-process runs under ``torchrun`` — training (DDP) and batch inference (case sharding).

``torchrun --nproc-per-node N -m AnomalySegLib train-recon|segment ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`init_distributed` reads them, joins the process group (NCCL on CUDA, gloo on the
CPU) and gives each process its GPU. Without those variables it is a single process. Only rank 0 logs,
shows progress and writes files (:attr:`DistributedContext.is_main`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from AnomalySegLib.device import choose_device


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: ``rank`` of ``world_size`` processes, computing on ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_request: str = "auto") -> DistributedContext:
    """Join the ``torchrun`` process group if there is one; otherwise a single-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext(0, 1, 0, choose_device(device_request))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = choose_device(device_request)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(rank, world_size, local_rank, device)


def wrap_model(model: nn.Module, context: DistributedContext) -> nn.Module:
    """``model`` on the context's device, wrapped in DDP when there are several processes."""
    model = model.to(context.device)
    if not context.distributed:
        return model
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def mean_across_processes(value: float, context: DistributedContext) -> float:
    """The mean of ``value`` over all processes (itself when single-process)."""
    if not context.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / context.world_size


def barrier(context: DistributedContext) -> None:
    """Wait for all processes (no-op single-process)."""
    if context.distributed:
        dist.barrier()


def shutdown(context: DistributedContext) -> None:
    """Leave the process group (no-op single-process)."""
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()
