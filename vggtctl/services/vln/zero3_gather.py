"""A ZeRO-3 module's full weights on rank 0's CPU, gathered a bounded group of parameters at a time.

ZeRO-3 leaves each rank a 1/N slice of every weight. Gathering the whole model at once (one
``GatheredParameters`` over every parameter) makes every rank hold a full copy for a moment: 8 full copies
of a 7B model on 8 ranks. Here the parameters are gathered in groups of at most ``group_bytes`` (a single
bigger parameter alone), rank 0 copies each group to CPU memory, and every rank releases the group before the
next one is gathered; the other ranks only take part in the all-gather. The values are the module's own, in
the dtype it trains in (what ``save_pretrained`` wrote under a whole-model gather), tied parameters are one
tensor under each of their names, and the keys are ``module.state_dict()``'s.

:class:`GatherStats` says what a rank held: the peak bytes of gathered full weights, what was still gathered
after each release, and the bytes it copied to CPU. Parameters at or below DeepSpeed's
``stage3_param_persistence_threshold`` stay whole on every rank all through training (``ds_persist``), so they
are not counted as gathered.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

GROUP_BYTES = 256 * 2**20
"""Default bound on the full bytes gathered at once (256 MiB)."""


@dataclass
class GatherStats:
    """What one rank held during :func:`gather_full_state_dict`.

    Attributes:
        groups: Gathers done (one per group of parameters).
        peak_gathered_bytes: Most bytes of gathered (non-persistent) full weights on this rank at once, counted
            over every parameter of the module while each group was gathered.
        left_gathered_bytes: Most such bytes still there right after a group was released (0: all released).
        kept_bytes: Bytes this rank copied to CPU (the full state dict on rank 0, nothing elsewhere).
        largest_param_bytes: Full bytes of the biggest parameter (a group never splits one).
    """

    groups: int = 0
    peak_gathered_bytes: int = 0
    left_gathered_bytes: int = 0
    kept_bytes: int = 0
    largest_param_bytes: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _full_bytes(param: Any) -> int:
    return int(param.ds_numel) * param.element_size()


def gathered_bytes(params: list[Any]) -> int:
    """Bytes of full weights materialised now among the partitioned (not persistent) ZeRO-3 ``params``."""
    return sum(p.data.numel() * p.data.element_size() for p in params if not getattr(p, "ds_persist", False))


def bounded_groups(params: list[Any], group_bytes: int) -> list[list[Any]]:
    """``params`` in order, cut into runs whose full bytes stay within ``group_bytes`` (a bigger one alone)."""
    groups: list[list[Any]] = []
    current: list[Any] = []
    size = 0
    for p in params:
        n = _full_bytes(p)
        if current and size + n > group_bytes:
            groups.append(current)
            current, size = [], 0
        current.append(p)
        size += n
    if current:
        groups.append(current)
    return groups


def gather_full_state_dict(
    module: torch.nn.Module, rank: int, group_bytes: int = GROUP_BYTES
) -> tuple[dict[str, torch.Tensor] | None, GatherStats]:
    """The full CPU state dict of a ZeRO-3 ``module`` on rank 0 (None elsewhere); every rank must call it.

    Args:
        module: The engine's module (its parameters partitioned by ZeRO-3).
        rank: This process's global rank.
        group_bytes: Most full bytes gathered at once.

    Returns:
        ``(state_dict, stats)``: ``state_dict`` on rank 0, None on the other ranks.
    """
    import deepspeed

    entries = module.state_dict(keep_vars=True)
    params: list[Any] = []
    seen: set[int] = set()
    for value in entries.values():
        if hasattr(value, "ds_id") and id(value) not in seen:
            seen.add(id(value))
            params.append(value)
    stats = GatherStats(largest_param_bytes=max((_full_bytes(p) for p in params), default=0))
    copies: dict[int, torch.Tensor] = {}
    for group in bounded_groups(params, group_bytes):
        with deepspeed.zero.GatheredParameters(group, modifier_rank=None):
            stats.peak_gathered_bytes = max(stats.peak_gathered_bytes, gathered_bytes(params))
            if rank == 0:
                for p in group:
                    copies[id(p)] = p.detach().to("cpu", copy=True)
        stats.left_gathered_bytes = max(stats.left_gathered_bytes, gathered_bytes(params))
        stats.groups += 1
    if rank != 0:
        return None, stats
    out: dict[str, torch.Tensor] = {}
    for name, value in entries.items():
        if id(value) not in copies:  # a buffer (ZeRO-3 partitions parameters only)
            copies[id(value)] = value.detach().to("cpu", copy=True)
        out[name] = copies[id(value)]  # tied parameters: one tensor under each name
    stats.kept_bytes = sum(t.numel() * t.element_size() for t in copies.values())
    return out, stats
