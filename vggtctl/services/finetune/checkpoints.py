"""Atomic, resumable fine-tuning checkpoints: ``RUN/checkpoints/step_0000100/``.

A checkpoint folder holds the LoRA adapter in PEFT's format (``adapter/``), ``trainer_state.pt``
(optimizer, scheduler, data position, step), one ``rng_rank{N}.pt`` per rank and ``manifest.json``.
It is written as the hidden ``.step_0000100.tmp`` and renamed into place after its manifest: a folder
named ``step_*`` is always whole. Only then are the oldest beyond ``keep_last`` removed. Everything is
read back with ``torch.load(weights_only=True)`` or safetensors, never unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from vggtctl.errors import CheckpointError
from vggtctl.runs import layout
from vggtctl.utils.atomic import atomic_write_json

MANIFEST = "manifest.json"
ADAPTER = "adapter"
TRAINER_STATE = "trainer_state.pt"


def rng_name(rank: int) -> str:
    return f"rng_rank{rank}.pt"


def staging_dir(checkpoints: Path, step: int) -> Path:
    return checkpoints / f".{layout.checkpoint_name(step)}.tmp"


def complete_checkpoints(checkpoints: Path) -> list[tuple[int, Path]]:
    """``[(step, folder)]`` of the checkpoints whose manifest exists, by step."""
    if not checkpoints.is_dir():
        return []
    found = []
    for p in checkpoints.iterdir():
        step = layout.step_from_checkpoint_name(p.name)
        if step is not None and (p / MANIFEST).is_file():
            found.append((step, p))
    return sorted(found)


def latest_checkpoint(checkpoints: Path) -> Path | None:
    done = complete_checkpoints(checkpoints)
    return done[-1][1] if done else None


def write_rank_state(staging: Path, rank: int, rng: dict[str, Any]) -> None:
    """Every rank: its random states into the staging folder (before rank 0 commits it)."""
    staging.mkdir(parents=True, exist_ok=True)
    tmp = staging / (rng_name(rank) + ".tmp")
    torch.save(rng, tmp)
    os.replace(tmp, staging / rng_name(rank))


def commit_checkpoint(
    staging: Path,
    final: Path,
    peft_model: Any,
    trainer_state: dict[str, Any],
    manifest: dict[str, Any],
    keep_last: int,
) -> Path:
    """Rank 0: adapter and trainer state into ``staging``, manifest last, rename to ``final``, prune old ones."""
    peft_model.save_pretrained(str(staging / ADAPTER))
    torch.save(trainer_state, staging / TRAINER_STATE)
    atomic_write_json(staging / MANIFEST, manifest)
    if final.exists():  # a checkpoint of the same step from a run stopped before it went on: replace it
        shutil.rmtree(final)
    os.replace(staging, final)
    done = complete_checkpoints(final.parent)
    for _, old in done[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_checkpoint(folder: Path, rank: int) -> tuple[dict[str, Any], dict[str, Any] | None, Path]:
    """``(trainer_state, this rank's rng or None, adapter folder)`` of a complete checkpoint.

    Raises:
        CheckpointError: The folder has no manifest (incomplete) or its files cannot be read.
    """
    if not (folder / MANIFEST).is_file():
        raise CheckpointError(
            f"{folder} is not a complete checkpoint (no {MANIFEST})",
            "resume from another one (`--resume auto` picks the newest complete checkpoint)",
        )
    try:
        state = torch.load(folder / TRAINER_STATE, map_location="cpu", weights_only=True)
        rng_path = folder / rng_name(rank)
        rng = torch.load(rng_path, map_location="cpu", weights_only=True) if rng_path.is_file() else None
    except Exception as e:  # noqa: BLE001 - any unreadable file makes the checkpoint unusable
        raise CheckpointError(
            f"cannot read checkpoint {folder}: {e}", "resume from an earlier checkpoint"
        ) from None
    return state, rng, folder / ADAPTER


def read_manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
