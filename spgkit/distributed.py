"""This process's place in a ``torchrun`` job, and the reductions training and evaluation need."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """Rank and world size (0 of 1 without torchrun) and the device collectives run on: NCCL
    reduces only CUDA tensors, gloo CPU ones."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: torch.device) -> tuple["Dist", torch.device]:
        """The process group torchrun describes in the environment (initialised here, NCCL for
        CUDA, gloo otherwise), or one process; and the device this process trains on (its own GPU,
        ``cuda:$LOCAL_RANK``, under torchrun)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls(), device
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), reduce_device(dist.get_backend(), device)), device

    def share(self, value):
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value) -> list:
        """Every rank's ``value`` (any picklable object), in rank order, on every rank."""
        if self.world == 1:
            return [value]
        values = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def sum(self, array: np.ndarray) -> np.ndarray:
        """Element-wise sum of ``array`` over all ranks."""
        if self.world == 1:
            return array
        array = np.asarray(array)
        tensor = torch.tensor(array, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.cpu().numpy().astype(array.dtype)


def reduce_device(backend: str, device: torch.device) -> torch.device:
    """Where a backend's collectives take their tensors: this process's CUDA ``device`` for NCCL,
    the CPU for gloo."""
    return device if backend == "nccl" else torch.device("cpu")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA where there is none is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here; use --device cpu")
    return device
