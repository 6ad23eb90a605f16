"""Data-parallel training across processes started by torchrun (one process per GPU, or gloo
processes on CPU).

Every rank builds the same model, trains on its own shards of the step's batch (see
``iclab.training.trainer.sample_batch``) and DistributedDataParallel averages the gradients, so
W processes with shards of a global batch B take the same steps as one process with batch B.
Only rank 0 writes the run directory (``iclab.run``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Processes:
    """Where this process stands among the processes training one run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes logs, checkpoints and run.json."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The average of ``value`` over the processes (itself when there is one)."""
        if not self.distributed:
            return value
        total = value.detach().clone()
        dist.all_reduce(total)
        return total / self.world_size


def join_processes() -> Processes:
    """This process's place, from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); joins
    the process group on first use: NCCL when CUDA is available, gloo otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Processes()
    processes = Processes(
        rank=int(os.environ["RANK"]),
        world_size=world_size,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(processes.local_rank)
        dist.init_process_group(backend)
    return processes


def leave_processes() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()
