"""The ``train-vln`` export under ZeRO-3, written shard by shard as the weights are gathered.

Every rank gathers the weights a bounded group at a time (:mod:`vggtctl.services.vln.zero3_gather`); rank 0
appends each group's tensors to the weight file they are planned for and writes a file (then frees it) as
soon as its last tensor has arrived (:mod:`vggtctl.services.vln.streamed_safetensors`). So rank 0 holds at
most about one shard plus one group of weights in CPU memory, never the whole model: the Qwen weights go
into Hugging Face shards of at most ``shard_bytes`` (a bigger tensor alone), the VGGT merger into
``vggt_merger.safetensors`` as it is written without ZeRO-3.

The files are planned before the first gather, from the sizes every rank knows (``ds_numel`` x the element
size) and in the order the tensors will arrive, so each shard has its final name
(``model-00001-of-0000N.safetensors``) when it is written: no temporary names, no renames, one pass; the
names, the tie handling and the index are transformers' and huggingface_hub's own
(:mod:`vggtctl.services.vln.hf_layout`). The rest of the folder (config, generation config, tokenizer, image
processor, ``vln.json`` last) is written as without ZeRO-3, in the same staging folder
(:func:`~vggtctl.services.vln.checkpoint.export_model`).

transformers 4.x lacks the save helpers the plan takes the names from (:func:`~vggtctl.services.vln.hf_layout.can_stream`):
there rank 0 keeps every group until the last and hands the whole state dict to ``save_pretrained``
(:func:`write_whole`), as before streaming: the same files, but rank 0 holds the whole model in CPU memory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from vggtctl.errors import CheckpointError
from vggtctl.services.vln.checkpoint import MERGER, export_model
from vggtctl.services.vln.hf_layout import (
    SHARD_METADATA,
    can_stream,
    plan_shards,
    saved_names,
    write_index,
    write_model_config,
)
from vggtctl.services.vln.streamed_safetensors import StreamedSafetensors
from vggtctl.services.vln.zero3_gather import ExportTensor, GatherStats, export_order, gather_groups

log = logging.getLogger(__name__)

_QWEN, _VGGT_MERGER = "qwen.", "vggt_merger."


@dataclass
class ExportStats(GatherStats):
    """:class:`~vggtctl.services.vln.zero3_gather.GatherStats` plus what rank 0's writer did.

    Attributes:
        shards: Qwen weight files written (0 on the other ranks).
        peak_held_bytes: Most bytes of exported weights rank 0 held in CPU memory at once: the tensors
            buffered for files not yet written plus the group just gathered (0 on the other ranks).
    """

    shards: int = 0
    peak_held_bytes: int = 0


@dataclass
class ExportPlan:
    """Where each tensor of the module goes.

    Attributes:
        route: A tensor's first ``module.state_dict()`` name -> (file, name in the file); a tensor not there
            is not written (a key transformers does not save, anything outside Qwen and the merger).
        files: File -> the names it holds, in arrival order.
        sizes: File -> name -> planned bytes.
        metadata: File -> safetensors header metadata.
        split: huggingface_hub's ``StateDictSplit`` of the Qwen weights (for the index).
        total_parameters: Distinct Qwen parameters (the index's ``metadata.total_parameters``).
    """

    route: dict[str, tuple[str, str]] = field(default_factory=dict)
    files: dict[str, list[str]] = field(default_factory=dict)
    sizes: dict[str, dict[str, int]] = field(default_factory=dict)
    metadata: dict[str, dict[str, str] | None] = field(default_factory=dict)
    split: Any = None
    total_parameters: int = 0


def plan_export(qwen: Any, order: list[ExportTensor], shard_bytes: int) -> ExportPlan:
    """The files of the export of a :class:`~vggtctl.services.vln.model.VlnModel` whose tensors come in ``order``.

    Raises:
        CheckpointError: transformers would convert (not only rename) this model's weights when saving.
    """
    plan = ExportPlan()
    qwen_entries = [e for e in order if any(n.startswith(_QWEN) for n in e.names)]
    names = saved_names(
        qwen, [[n.removeprefix(_QWEN) for n in e.names if n.startswith(_QWEN)] for e in qwen_entries]
    )
    kept = [(e, name) for e, name in zip(qwen_entries, names, strict=True) if name is not None]
    plan.split = plan_shards({name: e.nbytes for e, name in kept}, shard_bytes)
    placed = [(e, plan.split.tensor_to_filename[name], name) for e, name in kept]
    merger = [e for e in order if e.names[0].startswith(_VGGT_MERGER)]
    placed += [(e, MERGER, e.names[0].removeprefix(_VGGT_MERGER)) for e in merger]
    for e, file, name in placed:
        plan.route[e.names[0]] = (file, name)
        plan.files.setdefault(file, []).append(name)
        plan.sizes.setdefault(file, {})[name] = e.nbytes
        plan.metadata[file] = None if file == MERGER else SHARD_METADATA
    plan.total_parameters = sum(
        e.nbytes // e.tensor.element_size() for e in qwen_entries if isinstance(e.tensor, torch.nn.Parameter)
    )
    return plan


def write_streamed(folder: Path, qwen: Any, plan: ExportPlan,
                   groups: Iterable[list[tuple[ExportTensor, Tensor]]]) -> StreamedSafetensors:  # fmt: skip
    """Write ``plan``'s weight files from ``groups`` as they come, then the index and Qwen's config files.

    Args:
        folder: The export's staging folder.
        qwen: The Qwen2.5-VL model (its config and generation config).
        plan: :func:`plan_export`'s plan.
        groups: Each group's ``(entry, full CPU tensor)`` pairs, in the plan's order.

    Returns:
        The writer (what it wrote and the most bytes it held).
    """
    files = StreamedSafetensors(folder, plan.files, plan.sizes, plan.metadata)
    for group in groups:
        files.add_group([(*plan.route[e.names[0]], t) for e, t in group if e.names[0] in plan.route])
        group.clear()  # the written tensors go now, not when the next group has been gathered
    files.close()
    write_index(folder, plan.split, plan.total_parameters)
    write_model_config(qwen, folder)
    return files


def write_whole(folder: Path, module: Any, groups: Iterable[list[tuple[ExportTensor, Tensor]]]) -> int:
    """Write the export's weights from ``groups`` at once, through ``save_pretrained(state_dict=...)``.

    The fallback of :func:`write_streamed` where transformers lacks the helpers it needs: every gathered
    tensor is kept (under all its ``state_dict`` names) until the last group, so rank 0 holds the whole model.

    Args:
        folder: The export's staging folder.
        module: The :class:`~vggtctl.services.vln.model.VlnModel` (its Qwen saves, with the gathered weights).
        groups: Each group's ``(entry, full CPU tensor)`` pairs.

    Returns:
        The bytes held at the end (the whole model's distinct tensors).
    """
    whole: dict[str, Tensor] = {}
    held = 0
    for group in groups:
        for e, t in group:
            held += t.numel() * t.element_size()
            whole.update(dict.fromkeys(e.names, t))
    part = {prefix: {k.removeprefix(prefix): v for k, v in whole.items() if k.startswith(prefix)}
            for prefix in (_QWEN, _VGGT_MERGER)}  # fmt: skip
    module.qwen.save_pretrained(folder, state_dict=part[_QWEN])
    save_file({k: v.contiguous() for k, v in part[_VGGT_MERGER].items()}, folder / MERGER)
    return held


def export_zero3(out: Path, module: Any, tokenizer: Any, image_processor: Any, facts: dict[str, Any], rank: int,
                 group_bytes: int, shard_bytes: int) -> ExportStats:  # fmt: skip
    """Write the export of a ZeRO-3 ``module`` (see the module doc); every rank must call it.

    Args:
        out: The export folder (written by rank 0).
        module: The engine's :class:`~vggtctl.services.vln.model.VlnModel` (partitioned by ZeRO-3).
        tokenizer: Qwen's tokenizer.
        image_processor: Qwen's image processor.
        facts: What ``vln.json`` records.
        rank: This process's global rank.
        group_bytes: Most full bytes gathered at once.
        shard_bytes: Most bytes of one Qwen weight shard (a bigger tensor alone).

    Returns:
        What this rank gathered, copied and (rank 0) held.

    """
    order = export_order(module)
    # Planned on every rank: a model that cannot be streamed stops them all before the first gather.
    plan = None
    if can_stream():
        try:
            plan = plan_export(module.qwen, order, shard_bytes)
        except CheckpointError as e:  # its save converts weights: only the whole state dict will do
            log.warning("%s; saving the whole state dict from rank 0 instead", e.message)
    stats = ExportStats()
    if rank != 0:
        for _ in gather_groups(module, order, rank, group_bytes, stats):
            pass
        return stats

    def write_weights(folder: Path) -> None:
        groups = gather_groups(module, order, rank, group_bytes, stats)
        if plan is None:  # transformers 4.x: the whole state dict, as save_pretrained takes it
            stats.peak_held_bytes = write_whole(folder, module, groups)
            stats.shards = len(list(folder.glob("model*.safetensors")))
            return
        files = write_streamed(folder, module.qwen, plan, groups)
        stats.shards = sum(1 for f in files.written if f != MERGER)
        stats.peak_held_bytes = files.peak_held_bytes

    export_model(out, module, tokenizer, image_processor, facts, write_weights=write_weights)
    return stats
