"""Safe 7z extraction: validate members, extract into a temporary sibling, then rename into place.

Nothing is written into the target until the whole archive has been decoded and checked: absolute
member paths, ``..`` components, members below a symlink member, and links that resolve outside the
target reject the archive. A corrupted archive raises :class:`ArchiveError` and leaves the target as
it was. Moving into place is a series of ``os.rename`` calls (atomic per entry, same filesystem).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import py7zr
from py7zr.callbacks import ExtractCallback

from vggtctl.errors import InputError

_DRIVE = re.compile(r"^[A-Za-z]:")
# renames into one dataset folder must not interleave (two archives of one scene share folders)
_MERGE_LOCK = threading.Lock()


class ArchiveError(InputError):
    """The archive is corrupted or unsafe; nothing was extracted."""


@dataclass
class ExtractResult:
    """What :func:`safe_extract` put into the target.

    Attributes:
        files: relative POSIX path -> size in bytes, for every regular file.
        top_level: the archive's top-level entries (ETH3D: the scene folder).
        bytes: total uncompressed bytes.
        seconds: wall time.
    """

    files: dict[str, int] = field(default_factory=dict)
    top_level: list[str] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0


def check_member_name(name: str) -> str:
    """Normalise an archive member name or raise :class:`ArchiveError` for an unsafe one."""
    norm = name.replace("\\", "/")
    if not norm or norm.startswith("/") or _DRIVE.match(norm):
        raise ArchiveError(f"member {name!r} has an absolute path")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ArchiveError(f"member {name!r} escapes the target with '..'")
    if not parts:
        raise ArchiveError(f"member {name!r} has an empty path")
    return "/".join(parts)


def list_members(archive: Path) -> list[tuple[str, int, bool, bool]]:
    """``(normalised name, size, is_dir, is_symlink)`` of every member, validated.

    Raises:
        ArchiveError: not a readable 7z archive, or an unsafe member.
    """
    try:
        with py7zr.SevenZipFile(archive, "r") as z:
            infos = z.list()
    except Exception as e:  # noqa: BLE001 - py7zr raises many types for damaged headers
        raise ArchiveError(f"{archive.name} is not a readable 7z archive ({type(e).__name__}: {e})") from e
    out = []
    for info in infos:
        out.append((check_member_name(info.filename), int(info.uncompressed or 0), bool(info.is_directory),
                    bool(info.is_symlink)))  # fmt: skip
    links = {name for name, _, _, link in out if link}
    for name, _, _, _ in out:
        for link in links:
            if name != link and name.startswith(link + "/"):
                raise ArchiveError(f"member {name!r} lies below the symlink member {link!r}")
    return out


def safe_extract(
    archive: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    on_bytes: Callable[[int], None] | None = None,
) -> ExtractResult:
    """Extract a 7z archive into ``target`` safely (see module docstring).

    Args:
        archive: the ``.7z`` file.
        target: destination folder (created); existing files of the same names are replaced.
        on_bytes: called with the uncompressed size of each extracted file (progress).

    Returns:
        An :class:`ExtractResult` listing the files written.

    Raises:
        ArchiveError: corrupted or unsafe archive; ``target`` is unchanged.
    """
    t0 = time.perf_counter()
    archive, target = Path(archive), Path(target)
    members = list_members(archive)
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / f".extract-{archive.name}-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        callback = _Callback(on_bytes) if on_bytes is not None else None
        try:
            with py7zr.SevenZipFile(archive, "r") as z:
                z.extractall(path=tmp, callback=callback)
        except Exception as e:  # noqa: BLE001 - CRC errors, LZMA errors, truncated streams...
            if "symlink" in str(e).lower():  # py7zr's own link check fires before ours
                raise ArchiveError(f"{archive.name}: a link points outside the target ({e})") from e
            raise ArchiveError(f"{archive.name} is corrupted ({type(e).__name__}: {e})") from e
        result = _verify_tree(tmp, members, archive.name)
        with _MERGE_LOCK:
            for entry in sorted(os.listdir(tmp)):
                _merge(tmp / entry, target / entry)
        result.seconds = time.perf_counter() - t0
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _Callback(ExtractCallback):
    """py7zr progress callback (called from its reporter thread): bytes per finished file."""

    def __init__(self, on_bytes: Callable[[int], None]) -> None:
        self._on_bytes = on_bytes

    def report_start_preparation(self) -> None:
        return None

    def report_start(self, processing_file_path: str, processing_bytes: str) -> None:
        return None

    def report_update(self, decompressed_bytes: str) -> None:
        return None

    def report_end(self, processing_file_path: str, wrote_bytes: str) -> None:
        with contextlib.suppress(TypeError, ValueError):
            self._on_bytes(int(wrote_bytes))

    def report_warning(self, message: str) -> None:
        return None

    def report_postprocess(self) -> None:
        return None


def _verify_tree(tmp: Path, members: list[tuple[str, int, bool, bool]], archive_name: str) -> ExtractResult:
    """Check every link stays inside, every listed file exists with its size; collect the listing."""
    root = tmp.resolve()
    result = ExtractResult()
    for dirpath, dirnames, filenames in os.walk(tmp):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                dest = (p.parent / os.readlink(p)).resolve()
                if dest != root and root not in dest.parents:
                    raise ArchiveError(
                        f"{archive_name}: link {p.relative_to(tmp)} points outside the target ({os.readlink(p)})"
                    )
    for name, size, is_dir, is_link in members:
        p = tmp / name
        if is_dir or is_link:
            continue
        if not p.is_file():
            raise ArchiveError(f"{archive_name}: member {name} was not extracted")
        got = p.stat().st_size
        if got != size:
            raise ArchiveError(f"{archive_name}: member {name} has {got} bytes, the archive says {size}")
        result.files[name] = size
        result.bytes += size
    result.top_level = sorted({name.split("/", 1)[0] for name, *_ in members})
    return result


def _merge(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``: rename when ``dst`` is absent, recurse into existing folders, replace files."""
    if not dst.exists() and not dst.is_symlink():
        os.rename(src, dst)
        return
    if src.is_dir() and not src.is_symlink() and dst.is_dir() and not dst.is_symlink():
        for entry in sorted(os.listdir(src)):
            _merge(src / entry, dst / entry)
        return
    if dst.is_dir() and not dst.is_symlink():
        shutil.rmtree(dst)
    os.replace(src, dst)
