"""Follow a growing file like ``tail -F``: new whole lines on each poll, across rotation and truncation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from vggtctl.services.monitor.reader import last_cut, looks_complete

MAX_POLL_BYTES = 64 << 20


class FileTail:
    """Reads what was appended to ``path`` since the last poll.

    Rotation (``path`` now names another file): the old file is read to its end first, then the new one
    from its start. Truncation (the file shrank, ``copytruncate``): reading restarts at offset 0.

    Args:
        path: The file to follow (it may not exist yet).
        offset: Where whole lines already read end.
    """

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = path
        self.offset = offset
        self.partial = b""
        self.truncations = 0
        self.rotations = 0
        self._f: BinaryIO | None = None
        self._id: tuple[int, int] | None = None

    def _open(self, offset: int) -> bool:
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - kept open between polls, closed in close()
        except (FileNotFoundError, PermissionError):
            return False
        st = os.fstat(f.fileno())
        self._f, self._id = f, (st.st_dev, st.st_ino)
        if offset > st.st_size:
            offset = 0
        f.seek(offset)
        self.offset = offset
        return True

    def _read(self, limit: int) -> bytes:
        assert self._f is not None
        data = self._f.read(limit)
        self.offset += len(data)
        data = self.partial + data
        cut = last_cut(data)
        self.partial = data[cut:]
        return data[:cut]

    def poll(self, limit: int = MAX_POLL_BYTES) -> tuple[bytes, bytes, bool]:
        """New data since the last poll.

        Returns:
            ``(lines, partial, reset)``: whole lines appended, the unterminated last line when it is a
            finished tqdm redraw (else empty; it is returned again, whole, later; it may hold several
            ``\\r`` redraws of a line whose ``\\n`` has not come yet), and whether the file was
            truncated (what was read before is gone).
        """
        reset = False
        chunks = []
        try:
            st = os.stat(self.path)
        except (FileNotFoundError, PermissionError):
            st = None
        if self._f is None:
            if st is None or not self._open(self.offset):
                return b"", b"", False
        elif st is None or (st.st_dev, st.st_ino) != self._id:
            chunks.append(self._read(limit))
            if looks_complete(self.partial):
                chunks.append(self.partial + b"\n")
            self.close()
            self.partial = b""
            self.offset = 0
            self.rotations += 1
            if st is None or not self._open(0):
                return b"".join(chunks), b"", False
        elif st.st_size < self.offset:
            self.truncations += 1
            self.partial = b""
            self._f.seek(0)
            self.offset = 0
            reset = True
        chunks.append(self._read(limit))
        partial = self.partial if looks_complete(self.partial) else b""
        return b"".join(chunks), partial, reset

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
