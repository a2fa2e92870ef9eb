"""SHA-256 of checkpoints, hashed once per job: a sidecar cache shared by every process of the job.

A 5 GB checkpoint takes seconds to hash; a job with several ranks (or several commands on one
machine) should pay that once. Each file gets one cache entry under ``VGGTCTL_HOME/sha256-cache/``
keyed by its real path and checked against (size, mtime_ns); the entry is written atomically while
holding an exclusive lock on its own ``.lock`` file, so when several processes ask at once one
computes and the others wait for it and reuse its answer.

Folders (artifact directories: a quantized export, a LoRA run) hash to the sha256 of their manifest:
one ``"<relative path>\\0<file sha256>\\n"`` line per file, sorted by path, hidden files excluded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vggtctl.paths import vggtctl_home
from vggtctl.progress import NULL_PROGRESS, Progress
from vggtctl.utils.atomic import atomic_write_json
from vggtctl.utils.hashing import sha256_file

try:  # POSIX; elsewhere the cache still works, only concurrent first hashes may repeat
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]


@dataclass(frozen=True)
class HashResult:
    """A digest and whether this call computed it (``False``: read from the shared cache)."""

    sha256: str
    computed: bool


def cache_dir() -> Path:
    """Where the per-file hash entries live (``VGGTCTL_HOME/sha256-cache``)."""
    return vggtctl_home() / "sha256-cache"


def _entry_path(real: Path) -> Path:
    return cache_dir() / f"{hashlib.sha1(str(real).encode()).hexdigest()}.json"


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[bool]:
    """Hold an exclusive lock on ``lock_path``; yields False when no lock could be taken."""
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield False  # a read-only home only costs re-hashing
        return
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _cached(entry: Path, real: Path, st: os.stat_result) -> str | None:
    try:
        hit = json.loads(entry.read_text())
    except (OSError, ValueError):
        return None
    if (
        isinstance(hit, dict)
        and hit.get("path") == str(real)
        and hit.get("size") == st.st_size
        and hit.get("mtime_ns") == st.st_mtime_ns
        and isinstance(hit.get("sha256"), str)
    ):
        return str(hit["sha256"])
    return None


def hash_file(path: str | os.PathLike[str], progress: Progress = NULL_PROGRESS) -> HashResult:
    """SHA-256 of a file through the shared cache, computed by at most one process at a time.

    Args:
        path: The file.
        progress: Receives a byte-count task while hashing (not when the cache answers).

    Returns:
        The :class:`HashResult`.
    """
    real = Path(path).resolve()
    st = real.stat()
    entry = _entry_path(real)
    hit = _cached(entry, real, st)
    if hit is not None:
        return HashResult(hit, computed=False)
    with _locked(entry.with_suffix(".lock")) as locked:
        # Another process may have finished while this one waited for the lock.
        hit = _cached(entry, real, st) if locked else None
        if hit is not None:
            return HashResult(hit, computed=False)
        digest = sha256_file(real, progress)
        if locked:
            record = {"path": str(real), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
            with contextlib.suppress(OSError):
                atomic_write_json(entry, record)
    return HashResult(digest, computed=True)


def file_sha256(path: str | os.PathLike[str], progress: Progress = NULL_PROGRESS) -> str:
    """Hex SHA-256 of a file, hashed once per (real path, size, mtime) across processes."""
    return hash_file(path, progress).sha256


def folder_files(folder: Path) -> list[Path]:
    """The files a folder's digest covers: every regular file below it, hidden ones excluded, sorted."""
    out = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            out.append(p)
    return sorted(out, key=lambda p: p.relative_to(folder).as_posix())


def folder_sha256(folder: str | os.PathLike[str], progress: Progress = NULL_PROGRESS) -> str:
    """SHA-256 of a folder's manifest (relative path and sha256 of each file; see the module doc)."""
    root = Path(folder).resolve()
    h = hashlib.sha256()
    for p in folder_files(root):
        h.update(f"{p.relative_to(root).as_posix()}\0{file_sha256(p, progress)}\n".encode())
    return h.hexdigest()


def path_sha256(path: str | os.PathLike[str], progress: Progress = NULL_PROGRESS) -> str:
    """:func:`file_sha256` for a file, :func:`folder_sha256` for a folder."""
    p = Path(path)
    return folder_sha256(p, progress) if p.is_dir() else file_sha256(p, progress)
