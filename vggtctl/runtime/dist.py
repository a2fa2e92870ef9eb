"""Rank and world size from the launcher's environment: one rule for the CLI output and the run directory.

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; SLURM's ``srun`` sets ``SLURM_PROCID``,
``SLURM_LOCALID`` and ``SLURM_NTASKS``. The torchrun names win when both are present (torchrun inside a
SLURM allocation). A process that sees none of them is rank 0 of 1. An empty or malformed value counts
as unset: a rank that cannot be read must not silence rank 0's output or make every process write.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly single-process) job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_rank_zero(self) -> bool:
        """Only global rank 0 writes files and prints progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _int(env: Mapping[str, str], *names: str) -> int | None:
    for name in names:
        raw = env.get(name, "").strip()
        if raw.isdigit():
            return int(raw)
    return None


def dist_info(env: Mapping[str, str] | None = None) -> DistInfo:
    """Rank, local rank and world size from ``env`` (default ``os.environ``).

    ``LOCAL_RANK`` alone (some launchers set only it on one node) also decides the global rank.
    """
    env = os.environ if env is None else env
    local = _int(env, "LOCAL_RANK", "SLURM_LOCALID")
    rank = _int(env, "RANK", "SLURM_PROCID")
    if rank is None:
        rank = local if local is not None else 0
    world = _int(env, "WORLD_SIZE", "SLURM_NTASKS")
    world = max(world if world is not None else 1, rank + 1)
    return DistInfo(rank=rank, local_rank=local if local is not None else 0, world_size=world)


def is_rank_zero(env: Mapping[str, str] | None = None) -> bool:
    """True on global rank 0 (and in every single-process run)."""
    return dist_info(env).is_rank_zero


def init_distributed(device: str = "cpu") -> DistInfo:
    """Join the launcher's process group when the world is larger than one; return this process's place.

    NCCL for CUDA devices, gloo for CPU (the backend torch documents for each). The rendezvous
    (``MASTER_ADDR``/``MASTER_PORT``) comes from the launcher's environment. Single processes and processes
    already in a group are left as they are.
    """
    info = dist_info()
    if not info.distributed:
        return info
    import torch.distributed as torch_dist

    if not torch_dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            import torch

            torch.cuda.set_device(info.local_rank)
        torch_dist.init_process_group(backend=backend)
    return info


def shard(count: int, info: DistInfo | None = None) -> range:
    """The indices of ``count`` work items this rank owns: ``rank, rank + world, ...`` (deterministic).

    Round-robin rather than contiguous blocks: work sorted by size then spreads evenly over the ranks.
    """
    info = dist_info() if info is None else info
    return range(info.rank, count, info.world_size)
