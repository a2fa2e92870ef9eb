"""``train-vln`` checkpoints (resume) and the final export (inference).

A checkpoint ``RUN/checkpoints/step_0000100/`` holds the trainable weights (``trainable.safetensors``),
the optimizer and scheduler states, the RNG states (``*.pt``, read back with ``weights_only=True``) and
``state.json`` (step, samples seen, data position); it is built beside and moved in whole, ``state.json``
last (:class:`~vggtctl.utils.atomic.StagedDir`), so a folder with ``state.json`` is complete.

The export ``RUN/export/`` is a transformers ``save_pretrained`` folder of the trained Qwen2.5-VL (LLM and
Qwen merger trained, ViT as loaded) with its tokenizer and image processor, plus ``vggt_merger.safetensors``
and ``vln.json`` (λ, layer, widths, tiling, preprocessing, VGGT source) written last. Under ZeRO-3 the
weights are written as they are gathered, the Qwen ones in Hugging Face shards
(:mod:`vggtctl.services.vln.zero3_export`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vggtctl.errors import CheckpointError, InputError
from vggtctl.runs import RunDir
from vggtctl.services.vln.hf_layout import weight_file_names
from vggtctl.utils.atomic import StagedDir, atomic_write_json

STATE = "state.json"
TRAINABLE = "trainable.safetensors"
EXPORT = "export"
VLN_JSON = "vln.json"
MERGER = "vggt_merger.safetensors"


@dataclass
class TrainState:
    """Where training stands: optimizer steps, micro-steps and samples done, and the data position."""

    step: int = 0
    micro_steps: int = 0
    samples: int = 0
    epoch: int = 0
    position: int = 0
    loss: float | None = None


def save_checkpoint(
    run: RunDir, model: Any, optimizer: Any, scheduler: Any, state: TrainState, keep: int
) -> Path:
    """Write ``checkpoints/step_N/`` whole (rank 0), then drop the oldest beyond ``keep``."""
    final = run.checkpoint_dir(state.step)
    with StagedDir(final, marker=STATE) as tmp:
        save_file({k: v.contiguous().cpu() for k, v in model.trainable_state_dict().items()}, tmp / TRAINABLE)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        # The data order comes from (seed, epoch, position), so torch's RNG is the only one to keep.
        torch.save({"torch": torch.get_rng_state()}, tmp / "rng.pt")
        atomic_write_json(tmp / STATE, asdict(state))
    complete = [(s, p) for s, p in run.checkpoints() if (p / STATE).is_file()]
    for _, old in complete[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run: RunDir) -> Path | None:
    """The newest complete checkpoint (one with ``state.json``), or None."""
    complete = [p for _, p in run.checkpoints() if (p / STATE).is_file()]
    return complete[-1] if complete else None


def load_checkpoint(path: Path, model: Any, optimizer: Any, scheduler: Any) -> TrainState:
    """Restore weights, optimizer, scheduler and torch's RNG from ``path``; returns its state.

    Raises:
        CheckpointError: The checkpoint's weights do not match this model's trainable parameters.
    """
    weights = load_file(path / TRAINABLE)
    own = dict(model.named_parameters())
    expected = {n for n, p in own.items() if p.requires_grad}
    if set(weights) != expected:
        missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
        raise CheckpointError(
            f"checkpoint {path} does not match the model: missing {missing[:3]}, unexpected {extra[:3]}",
            "resume with the same model and train_* settings, or start a new --output-dir",
        )
    with torch.no_grad():
        for name, value in weights.items():
            own[name].copy_(value)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    rng = torch.load(path / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    return TrainState(**json.loads((path / STATE).read_text(encoding="utf-8")))


def export_model(out: Path, model: Any, tokenizer: Any, image_processor: Any, facts: dict[str, Any],
                 write_weights: Callable[[Path], None] | None = None) -> Path:  # fmt: skip
    """Write the inference folder (see the module doc) whole, ``vln.json`` last.

    Weight files of an earlier export in ``out`` that the new one does not write go (a single
    ``model.safetensors`` would otherwise shadow new shards: ``from_pretrained`` reads it first).

    Args:
        out: The export folder.
        model: The :class:`~vggtctl.services.vln.model.VlnModel` (its config, and its weights unless
            ``write_weights`` is given).
        tokenizer: Qwen's tokenizer.
        image_processor: Qwen's image processor.
        facts: What ``vln.json`` records.
        write_weights: Writes the Qwen weights, config and generation config and ``vggt_merger.safetensors``
            into the staging folder it is given, when the module does not hold its full weights (ZeRO-3:
            :func:`~vggtctl.services.vln.zero3_export.export_zero3`); None: read them from ``model``.
    """
    with StagedDir(out, marker=VLN_JSON, replace=weight_file_names(out)) as tmp:
        if write_weights is None:
            model.qwen.save_pretrained(tmp)
        else:
            write_weights(tmp)
        tokenizer.save_pretrained(tmp)
        image_processor.save_pretrained(tmp)
        if write_weights is None:
            merger = model.vggt_merger.state_dict()
            save_file({k: v.detach().contiguous().cpu() for k, v in merger.items()}, tmp / MERGER)
        atomic_write_json(tmp / VLN_JSON, facts)
    return out


def read_export_facts(path: Path) -> dict[str, Any]:
    """``vln.json`` of an export folder.

    Raises:
        InputError: ``path`` is not a finished ``train-vln`` export.
    """
    facts = path / VLN_JSON
    if not facts.is_file():
        hint = (
            f"pass the run's {EXPORT}/ folder: --checkpoint {path / EXPORT}"
            if (path / EXPORT / VLN_JSON).is_file()
            else "pass the export/ folder of a finished train-vln run"
        )
        raise InputError(f"{path} is not a train-vln export (no {VLN_JSON})", hint)
    return json.loads(facts.read_text(encoding="utf-8"))
