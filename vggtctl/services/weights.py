"""Weights on this machine: ``vggtctl download weights`` and the seeded tiny checkpoint's cache slot.

Composes the Hub resolution (:mod:`vggtctl.services.hub`, a leaf), the tiny checkpoint the model
package generates (:mod:`vggtctl.models.vggt.tiny`) and the shared hash cache
(:mod:`vggtctl.services.hashing`). The loader asks this module for the tiny checkpoint; nothing
here imports the loader.
"""

from __future__ import annotations

import os
from pathlib import Path

from vggtctl.errors import UsageError
from vggtctl.paths import vggtctl_home
from vggtctl.progress import NULL_PROGRESS, Progress
from vggtctl.services.hashing import file_sha256
from vggtctl.services.hub import DEFAULT_REPO, WeightsFile, fetch_weights

TINY_SOURCE = "tiny"


def tiny_checkpoint_path(create: bool = True) -> Path:
    """Path of the seeded tiny checkpoint in the vggtctl cache, generated (atomically) on first use."""
    path = vggtctl_home() / "weights" / "tiny" / "model.safetensors"
    if create and not path.is_file():
        write_tiny_weights(path)
    return path


def write_tiny_weights(path: str | os.PathLike[str]) -> Path:
    """Write the seeded tiny checkpoint to a ``.safetensors`` file or into a folder, atomically."""
    from vggtctl.models.vggt.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(path)


def download_weights(
    repo: str = DEFAULT_REPO,
    revision: str | None = None,
    *,
    local_dir: str | os.PathLike[str] | None = None,
    preset: str | None = None,
    dry_run: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> WeightsFile:
    """``vggtctl download weights``: fetch Hub weights, or write the seeded tiny checkpoint locally.

    Args:
        repo: Hub repo id (ignored with ``preset="tiny"``).
        revision: Hub revision to pin.
        local_dir: Put the file here instead of the HF cache (tiny: instead of the vggtctl cache).
        preset: ``"tiny"`` generates the seeded tiny checkpoint (no network); ``None`` uses the Hub.
        dry_run: Report what would be fetched/written and whether it is already there.
        progress: Receives byte-count tasks.

    Returns:
        The :class:`~vggtctl.services.hub.WeightsFile` with its local path and sha256 (what ``--model`` takes).
    """
    if preset is None:
        return fetch_weights(repo, revision, local_dir=local_dir, dry_run=dry_run, progress=progress)
    if preset != TINY_SOURCE:
        raise UsageError(
            f"preset {preset!r}: only the tiny checkpoint can be generated locally",
            f"use the tiny preset, or the Hub repo {DEFAULT_REPO} for the real weights",
        )
    if revision:
        raise UsageError(
            f"revision {revision!r} applies to Hub downloads, not to the generated tiny checkpoint",
            "drop the revision",
        )
    target = (
        Path(local_dir).expanduser() / "model.safetensors"
        if local_dir
        else tiny_checkpoint_path(create=False)
    )
    exists = target.is_file()
    result = WeightsFile(
        repo=None,
        revision=None,
        commit=None,
        filename=target.name,
        path=target.resolve(),
        size=target.stat().st_size if exists else None,
        cached=exists,
        source="generated",
    )
    if dry_run:
        result.sha256 = file_sha256(target, progress) if exists else None
        return result
    # Always regenerate: it is cheap and deterministic, and repairs a damaged copy.
    write_tiny_weights(target)
    result.downloaded = True
    result.size = target.stat().st_size
    result.sha256 = file_sha256(target, progress)
    return result
