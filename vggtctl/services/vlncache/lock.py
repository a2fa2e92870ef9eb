"""One writer per cache: an exclusive ``flock`` on ``build.lock`` for the length of a build or prune.

The kernel drops the lock when the holder exits, however it exits, so a killed build never leaves a
stale lock behind; the file records who held it last, for the error message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from vggtctl.errors import VggtctlError


class CacheLockedError(VggtctlError):
    """Another build (or prune) is writing this cache now."""


@contextlib.contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """Hold the cache's write lock, or raise :class:`CacheLockedError` at once (never wait)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise CacheLockedError(
                f"the cache {path.parent} is being written by {holder}",
                "wait for that build to finish (or stop it); a killed build releases the lock itself",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
