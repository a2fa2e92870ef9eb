"""SHA-256 of a file, streamed. The per-job cache on top of it is :mod:`vggtctl.services.hashing`."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from vggtctl.progress import NULL_PROGRESS, Progress

CHUNK = 16 << 20


def sha256_file(path: str | os.PathLike[str], progress: Progress = NULL_PROGRESS, chunk: int = CHUNK) -> str:
    """Hex SHA-256 of a file, read in ``chunk``-byte blocks (a byte-count task on ``progress``)."""
    real = Path(path)
    h = hashlib.sha256()
    task = progress.task(f"sha256 {real.name}", total=real.stat().st_size, unit="B")
    try:
        with open(real, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
                task.advance(len(block))
    finally:
        task.close()
    return h.hexdigest()
