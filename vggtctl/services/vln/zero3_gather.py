"""A ZeRO-3 module's full weights, gathered a bounded group of parameters at a time, handed out per group.

ZeRO-3 leaves each rank a 1/N slice of every weight. Gathering the whole model at once (one
``GatheredParameters`` over every parameter) makes every rank hold a full copy for a moment: 8 full copies
of a 7B model on 8 ranks. Here the parameters are gathered in groups of at most ``group_bytes`` (a single
bigger parameter alone), rank 0 copies each group to CPU memory, every rank releases the group, and only then
is the group's copy handed to the caller (:func:`gather_groups` yields it), before the next one is gathered:
the caller writes it away, so rank 0 never needs the whole model at once. The other ranks only take part in
the all-gather. The values are the module's own, in the dtype it trains in (what ``save_pretrained`` wrote
under a whole-model gather); a tied parameter is gathered once and comes with all its names, and the names
are ``module.state_dict()``'s.

:func:`export_order` is the order the tensors come in, with their full sizes, known on every rank before any
gather (``ds_numel`` x the element size), so a writer can plan its files up front. :class:`GatherStats` says
what a rank held: the peak bytes of gathered full weights, what was still gathered after each release, and
the bytes it copied to CPU. Parameters at or below DeepSpeed's ``stage3_param_persistence_threshold`` stay
whole on every rank all through training (``ds_persist``), so they are not counted as gathered.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch

GROUP_BYTES = 256 * 2**20
"""Default bound on the full bytes gathered at once (256 MiB)."""


@dataclass
class GatherStats:
    """What one rank held during :func:`gather_groups`.

    Attributes:
        groups: Gathers done (one per group of parameters).
        peak_gathered_bytes: Most bytes of gathered (non-persistent) full weights on this rank at once, counted
            over every parameter of the module while each group was gathered.
        left_gathered_bytes: Most such bytes still there right after a group was released (0: all released).
        copied_bytes: Bytes this rank copied to CPU over the whole export (the full model on rank 0, a group
            at a time; nothing elsewhere).
        largest_param_bytes: Full bytes of the biggest parameter (a group never splits one).
    """

    groups: int = 0
    peak_gathered_bytes: int = 0
    left_gathered_bytes: int = 0
    copied_bytes: int = 0
    largest_param_bytes: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class ExportTensor:
    """One distinct tensor of the module: the tensor (a ZeRO-3 parameter: its partitioned form), all its
    ``state_dict`` names (a tied weight has several), and its full bytes."""

    tensor: Any
    names: list[str]
    nbytes: int

    @property
    def partitioned(self) -> bool:
        return hasattr(self.tensor, "ds_id")


def full_bytes(t: Any) -> int:
    """Bytes of ``t`` whole: a ZeRO-3 parameter's full size (``ds_numel``), else its own."""
    return int(getattr(t, "ds_numel", t.numel())) * t.element_size()


def export_order(module: torch.nn.Module) -> list[ExportTensor]:
    """The module's distinct tensors in the order :func:`gather_groups` hands them out.

    The ZeRO-3 parameters first, in ``state_dict`` order, then the rest (buffers, which ZeRO-3 leaves whole),
    in ``state_dict`` order too. Works on any module (without ZeRO-3 everything is "the rest").
    """
    by_id: dict[int, ExportTensor] = {}
    for name, value in module.state_dict(keep_vars=True).items():
        if id(value) in by_id:
            by_id[id(value)].names.append(name)
        else:
            by_id[id(value)] = ExportTensor(value, [name], full_bytes(value))
    entries = list(by_id.values())
    return [e for e in entries if e.partitioned] + [e for e in entries if not e.partitioned]


def gathered_bytes(params: list[Any]) -> int:
    """Bytes of full weights materialised now among the partitioned (not persistent) ZeRO-3 ``params``."""
    return sum(p.data.numel() * p.data.element_size() for p in params if not getattr(p, "ds_persist", False))


def bounded_groups(entries: list[ExportTensor], group_bytes: int) -> list[list[ExportTensor]]:
    """``entries`` in order, cut into runs of at most ``group_bytes`` full bytes (a bigger one alone)."""
    groups: list[list[ExportTensor]] = []
    current: list[ExportTensor] = []
    size = 0
    for e in entries:
        if current and size + e.nbytes > group_bytes:
            groups.append(current)
            current, size = [], 0
        current.append(e)
        size += e.nbytes
    if current:
        groups.append(current)
    return groups


def gather_groups(
    module: torch.nn.Module, order: list[ExportTensor], rank: int, group_bytes: int, stats: GatherStats
) -> Iterator[list[tuple[ExportTensor, torch.Tensor]]]:
    """Gather a ZeRO-3 ``module``'s weights ``group_bytes`` at a time; every rank must run it through.

    Args:
        module: The engine's module (its parameters partitioned by ZeRO-3).
        order: :func:`export_order` of ``module``.
        rank: This process's global rank.
        group_bytes: Most full bytes gathered at once.
        stats: Filled in as the gathers go.

    Yields:
        On rank 0, each group's ``(entry, full CPU copy)`` pairs in ``order``, once the group is released on
        every rank; then the tensors ZeRO-3 does not partition (buffers) as a last group. Elsewhere, an empty
        list per group.
    """
    import deepspeed

    params = [e.tensor for e in order if e.partitioned]
    stats.largest_param_bytes = max((e.nbytes for e in order if e.partitioned), default=0)
    for group in bounded_groups([e for e in order if e.partitioned], group_bytes):
        copies: list[tuple[ExportTensor, torch.Tensor]] = []
        with deepspeed.zero.GatheredParameters([e.tensor for e in group], modifier_rank=None):
            stats.peak_gathered_bytes = max(stats.peak_gathered_bytes, gathered_bytes(params))
            if rank == 0:
                copies = [(e, e.tensor.detach().to("cpu", copy=True)) for e in group]
        stats.left_gathered_bytes = max(stats.left_gathered_bytes, gathered_bytes(params))
        stats.groups += 1
        stats.copied_bytes += sum(t.numel() * t.element_size() for _, t in copies)
        yield copies
        del copies
    rest = [e for e in order if not e.partitioned]
    if rank == 0 and rest:
        copies = [(e, e.tensor.detach().to("cpu", copy=True)) for e in rest]
        stats.copied_bytes += sum(t.numel() * t.element_size() for _, t in copies)
        yield copies
