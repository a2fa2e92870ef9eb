"""Reading log files: checks with clear errors, whole-line blocks backwards (tail-first) and forwards."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from vggtctl.errors import InputError

BLOCK = 1 << 20
FIRST_BLOCK = 64 << 10
CHUNK = 8 << 20
CR_SLACK = 64 << 10
_MAX_LINE = 64 << 20  # a "line" longer than this is cut: memory stays bounded on files without newlines


def check_log_file(path: Path, *, allow_empty: bool = False) -> os.stat_result:
    """Stat and sanity-check a log file.

    Args:
        path: The file.
        allow_empty: Accept an empty file (``--follow`` waits for the first lines).

    Returns:
        Its ``stat``.

    Raises:
        InputError: Missing, not a file, unreadable, empty, or binary.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(
            f"log not found: {path}",
            "check the path; with a glob such as outputs/train_*.log the newest match is used",
        ) from None
    except PermissionError:
        raise InputError(
            f"cannot read {path}: permission denied", f"check the permissions: ls -l {path}"
        ) from None
    if not path.is_file():
        raise InputError(f"not a regular file: {path}", "point at a training log or a vggtctl run directory")
    try:
        with open(path, "rb") as f:
            head = f.read(8192)
    except PermissionError:
        raise InputError(
            f"cannot read {path}: permission denied",
            f"check the permissions (ls -l {path}); run as the job's user or ask for read access",
        ) from None
    if not head and not allow_empty:
        raise InputError(
            f"log is empty: {path}", "the job has not written anything yet; wait, or use --follow"
        )
    nul = head.find(b"\x00")
    if nul >= 0:
        raise InputError(
            f"{path} is a binary file (NUL byte at offset {nul}), not a text log",
            "point at the training log (the job's redirected stdout/stderr), not a checkpoint or event file",
        )
    return st


def last_terminator(data: bytes) -> int:
    """Index just past the last ``\\n`` or ``\\r`` in ``data`` (0 when there is none)."""
    return max(data.rfind(b"\n"), data.rfind(b"\r")) + 1


def last_cut(data: bytes, slack: int = CR_SLACK) -> int:
    """Where to split ``data`` so the first part holds whole lines: after the last ``\\n``, so that the
    ``\\r`` redraws of a ``[rank3]:`` line stay with their prefix; after the last ``\\r`` only when that
    would hold back more than ``slack`` bytes (a log of bare tqdm redraws). 0: no terminator."""
    cut = data.rfind(b"\n") + 1
    if len(data) - cut > slack:
        cut = max(cut, data.rfind(b"\r") + 1)
    return cut


def _first_cut(data: bytes, slack: int = CR_SLACK) -> int:
    cut = data.find(b"\n", 0, slack)
    if cut < 0:
        cut = data.find(b"\r", 0, slack)
    if cut < 0:
        cut = data.find(b"\n")
    return cut + 1


def iter_blocks_backward(
    f: BinaryIO, end: int, first: int = FIRST_BLOCK, largest: int = CHUNK
) -> Iterator[bytes]:
    """Blocks of whole lines from ``end`` back to the start of the file, latest first.

    ``end`` must sit just after a line terminator (or at 0). Blocks start small and double up to
    ``largest``, so a short tail costs little and a long one few reads. They are cut at ``\\n`` (or ``\\r``
    when a block has no ``\\n``: a file of tqdm redraws only), so no line is split between two blocks.
    """
    carry = b""
    pos = end
    block = first
    while pos > 0:
        start = max(0, pos - block)
        block = min(2 * block, largest)
        f.seek(start)
        data = f.read(pos - start) + carry
        pos = start
        if start == 0:
            yield data
            return
        cut = _first_cut(data)
        if cut == 0 and len(data) < _MAX_LINE:
            carry = data
            continue
        carry = data[:cut]
        if cut < len(data):
            yield data[cut:]


def iter_chunks_forward(
    f: BinaryIO, start: int = 0, end: int | None = None, chunk: int = CHUNK, growing: bool = False
) -> Iterator[bytes]:
    """Chunks of whole lines from ``start`` to ``end`` (default: the end of the file); a partial last line
    is not yielded. ``growing`` doubles the chunk size from ``chunk`` up to ``CHUNK`` (a caller that may
    stop early reads little)."""
    f.seek(start)
    pos = start
    rest = b""
    while end is None or pos < end:
        data = f.read(chunk if end is None else min(chunk, end - pos))
        if growing:
            chunk = min(2 * chunk, CHUNK)
        if not data:
            break
        pos += len(data)
        data = rest + data
        cut = last_cut(data)
        if cut == 0 and len(data) < _MAX_LINE:
            rest = data
            continue
        rest = data[cut:] if cut else b""
        yield data[:cut] if cut else data
    # Complete \r-redraws after the last \n (``end`` sits just after a terminator).
    cut = last_terminator(rest)
    if cut:
        yield rest[:cut]


def looks_complete(tail: bytes) -> bool:
    """Whether an unterminated last line is a finished tqdm redraw (tqdm ends a bar with ``]`` and only
    writes the next ``\\r`` at the next update). Anything else is a line still being written: ignored."""
    return tail.rstrip(b" ").endswith(b"]") and (b"s/it" in tail or b"it/s" in tail)


def sample_line(path: Path, max_len: int = 160) -> str:
    """The last non-empty line of a file (for error messages), shortened."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 65536))
        data = f.read()
    for line in reversed(data.replace(b"\r", b"\n").split(b"\n")):
        text = line.decode("utf-8", "replace").strip()
        if text:
            return text if len(text) <= max_len else text[: max_len - 1] + "…"
    return ""
