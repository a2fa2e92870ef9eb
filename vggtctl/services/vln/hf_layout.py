"""What transformers' ``save_pretrained`` writes for a model, for an export that writes the weights itself.

A streamed export (:mod:`vggtctl.services.vln.zero3_export`) writes the weights tensor by tensor, so it
cannot hand transformers a state dict; it takes the rest of the layout from transformers' own code instead:

- :func:`saved_names`: the name each tensor is saved under. ``save_pretrained`` drops the model's
  ``_keys_to_ignore_on_save``, keeps one name of each tied tensor (``remove_tied_weights_from_state_dict``:
  a tied ``lm_head.weight`` goes, the embedding stays) and reverts the checkpoint renames of the model's
  conversion mapping (``revert_weight_conversion``: Qwen2.5-VL's ``model.language_model.*`` is saved as
  ``model.*`` and ``model.visual.*`` as ``visual.*``). Both run here on one-element stand-ins, tied names
  sharing one, so no weight is touched.
- :func:`plan_shards`: huggingface_hub's own split (the one ``save_pretrained`` uses: tensors in the order
  given, a new shard when the next one would pass the bound, a bigger tensor alone) and its file names,
  ``model.safetensors`` alone or ``model-00001-of-0000N.safetensors`` with ``model.safetensors.index.json``
  (:func:`write_index`: ``metadata.total_size``, ``metadata.total_parameters`` and ``weight_map``, as
  ``save_pretrained`` writes it; ``from_pretrained`` reads ``weight_map``).
- :func:`write_model_config`: ``config.json`` (with the model's dtype and architecture, as
  ``save_pretrained`` sets them) and ``generation_config.json``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from vggtctl.errors import CheckpointError

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
SHARD_METADATA = {"format": "pt"}
"""The safetensors header metadata ``save_pretrained`` writes into every weight file."""

_SHARD_NAME = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")


def weight_file_names(folder: Path) -> list[str]:
    """The names of the weight files of an earlier ``save_pretrained`` in ``folder`` (single, shards, index)."""
    if not folder.is_dir():
        return []
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.name in (SAFE_WEIGHTS, SAFE_INDEX) or _SHARD_NAME.fullmatch(p.name)
    )


def can_stream() -> bool:
    """Whether the installed transformers has the save helpers :func:`saved_names` runs (transformers 5).

    Without them (transformers 4.x) the ZeRO-3 export falls back to one whole state dict on rank 0
    (:func:`~vggtctl.services.vln.zero3_export.write_whole`).
    """
    try:
        from transformers.core_model_loading import revert_weight_conversion  # noqa: F401
        from transformers.modeling_utils import remove_tied_weights_from_state_dict  # noqa: F401
    except ImportError:
        return False
    return True


def saved_names(model: Any, tensors: list[list[str]]) -> list[str | None]:
    """The name ``save_pretrained`` writes each tensor under, None for one it does not write.

    Args:
        model: The transformers model (``PreTrainedModel``); only its class, config and module tree are read.
        tensors: Each distinct tensor's names in ``model.state_dict()`` (a tied weight: all its names).

    Returns:
        One entry per tensor, in order.

    Raises:
        CheckpointError: transformers would do more than drop and rename keys for this model (a weight
            conversion that merges or splits tensors), or leaves a tensor under two names.
    """
    from transformers.core_model_loading import revert_weight_conversion
    from transformers.modeling_utils import remove_tied_weights_from_state_dict

    stand_ins = [torch.zeros(1) for _ in tensors]
    skeleton = {name: t for t, names in zip(stand_ins, tensors, strict=True) for name in names}
    for key in getattr(model, "_keys_to_ignore_on_save", None) or ():
        skeleton.pop(key, None)
    reverted = revert_weight_conversion(model, remove_tied_weights_from_state_dict(skeleton, model))
    position = {id(t): i for i, t in enumerate(stand_ins)}
    out: list[str | None] = [None] * len(tensors)
    for name, value in reverted.items():
        i = position.get(id(value))
        if i is None or out[i] is not None:
            raise CheckpointError(
                f"cannot stream the export of {type(model).__name__}: saving it converts weights "
                f"(at {name!r}), which needs the whole state dict",
                "train with a ZeRO-1/2 preset, or rebuild full weights from the checkpoint with DeepSpeed's zero_to_fp32.py",
            )
        out[i] = name
    return out


def plan_shards(sizes: dict[str, int], shard_bytes: int) -> Any:
    """huggingface_hub's ``StateDictSplit`` of tensors of ``sizes`` bytes (in that order) at ``shard_bytes``."""
    from huggingface_hub import split_state_dict_into_shards_factory

    pattern = SAFE_WEIGHTS.replace(".safetensors", "{suffix}.safetensors")
    return split_state_dict_into_shards_factory(
        sizes, get_storage_size=lambda n: n, filename_pattern=pattern, max_shard_size=shard_bytes
    )


def write_index(folder: Path, split: Any, total_parameters: int) -> None:
    """``model.safetensors.index.json`` of a sharded ``split``, as ``save_pretrained`` writes it (nothing if one file)."""
    if not split.is_sharded:
        return
    index = {
        "metadata": {"total_parameters": total_parameters, **split.metadata},
        "weight_map": split.tensor_to_filename,
    }
    (folder / SAFE_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_model_config(model: Any, folder: Path) -> None:
    """``config.json`` and ``generation_config.json`` of ``model``, as ``save_pretrained`` writes them."""
    model.config.dtype = str(model.dtype).split(".")[1]
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(folder)
    if model.can_generate():
        model.generation_config.save_pretrained(folder)
