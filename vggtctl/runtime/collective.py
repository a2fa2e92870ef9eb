"""The few collectives a multi-process job needs, as no-ops in a single process.

A process launched by torchrun (or the shared launcher) with ``WORLD_SIZE > 1`` joins the default
process group on first use (:func:`vggtctl.runtime.dist.init_distributed`: NCCL on GPUs, gloo on CPU). Work is split by
:func:`vggtctl.runtime.dist.shard`; these only agree on decisions (a lock taken by rank 0, a build id)
and wait for every rank (before rank 0 merges what the ranks wrote).
"""

from __future__ import annotations

from typing import Any

from vggtctl.runtime.dist import DistInfo, dist_info, init_distributed

_device = {"name": "cpu"}


def configure(device: str) -> None:
    """The device this rank computes on (``cpu`` → gloo, ``cuda:N`` → NCCL) before the first collective."""
    _device["name"] = device


def _group(info: DistInfo) -> bool:
    """Join the default process group when distributed; True when collectives must run."""
    if not info.distributed:
        return False
    init_distributed(_device["name"])
    return True


def broadcast(obj: Any, info: DistInfo | None = None) -> Any:
    """Rank 0's ``obj`` on every rank (a picklable value)."""
    info = dist_info() if info is None else info
    if not _group(info):
        return obj
    import torch.distributed as td

    box = [obj]
    td.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo | None = None) -> None:
    """Wait until every rank gets here."""
    info = dist_info() if info is None else info
    if _group(info):
        import torch.distributed as td

        td.barrier()


def all_gather(obj: Any, info: DistInfo | None = None) -> list[Any]:
    """Every rank's ``obj``, in rank order."""
    info = dist_info() if info is None else info
    if not _group(info):
        return [obj]
    import torch.distributed as td

    out: list[Any] = [None] * info.world_size
    td.all_gather_object(out, obj)
    return out


def shutdown(info: DistInfo | None = None) -> None:
    """Leave the process group (if this process joined one)."""
    info = dist_info() if info is None else info
    if info.distributed:
        import torch.distributed as td

        if td.is_initialized():
            td.destroy_process_group()
