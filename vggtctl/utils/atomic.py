"""Crash-safe writes: a file goes through ``name.tmp``, fsync and ``os.replace``; a folder of outputs is
built in a hidden sibling and moved in with its marker file last (:class:`StagedDir`)."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; on success it atomically replaces ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    f = open(tmp, mode)  # noqa: SIM115 - closed below
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, final)
    except BaseException:
        # Closing flushes what is buffered, which fails again on a full disk: the temp file must go anyway.
        with contextlib.suppress(OSError):
            f.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    # numpy scalars / arrays and paths show up in reports; make them plain JSON.
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ---------------------------------------------------------------- folders: build beside, move in last


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StagedDir:
    """Write a folder's new content into a hidden sibling, then move it in with its marker file last.

    ``final`` may already hold an older output (or unrelated files of the user's): on :meth:`commit` the
    old marker is moved away first (so a reader never takes the folder as complete while it changes),
    then the entries the new content replaces and the ``replace`` names, then the new entries, the
    marker last. Ctrl-C is held during the commit (a few renames), so an interrupted run either left
    ``final`` as it was or committed whole. On any exception before the commit the staging folder is
    removed, and so are the parents this object created. Stale staging folders of dead processes
    (SIGKILL, power loss) are removed by the next ``StagedDir`` of the same ``final``.

    Args:
        final: The folder the content belongs in.
        marker: The file that says the folder is complete (written last by the caller, moved in last).
        replace: Names in ``final`` that belong to the previous output and go even when the new
            content has no entry of that name.
    """

    def __init__(self, final: str | os.PathLike[str], *, marker: str, replace: Iterable[str] = ()) -> None:
        self.final = Path(final)
        self.marker = marker
        self.replace = [n for n in replace if _plain_name(n)]
        if self.final.exists() and not self.final.is_dir():
            from vggtctl.errors import UsageError

            raise UsageError(
                f"output folder {self.final} is an existing file",
                "pass a folder path (it is created if missing), or remove the file",
            )
        self._created = _missing_parents(self.final.parent)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(self.final)
        self.path = self.final.parent / f".{self.final.name}.{os.getpid()}.tmp"
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir()

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()

    def discard(self) -> None:
        """Remove the staging folder and the parents created for it; ``final`` is untouched."""
        shutil.rmtree(self.path, ignore_errors=True)
        for d in self._created:  # deepest first
            with contextlib.suppress(OSError):
                d.rmdir()

    def commit(self) -> None:
        """Move the staged entries into ``final`` (created when missing), the marker last."""
        from vggtctl.utils.interrupts import deferred_interrupts

        with deferred_interrupts():
            self.final.mkdir(exist_ok=True)
            trash = self.path / ".replaced"
            trash.mkdir()
            new = sorted((p for p in self.path.iterdir() if p != trash), key=lambda p: p.name == self.marker)
            old_marker = self.final / self.marker
            if old_marker.exists() or old_marker.is_symlink():
                os.replace(old_marker, trash / self.marker)
            for name in sorted({p.name for p in new} | set(self.replace)):
                old = self.final / name
                if old.exists() or old.is_symlink():
                    os.replace(old, trash / name)
            for p in new:
                os.replace(p, self.final / p.name)
            _fsync_dir(self.final)
            shutil.rmtree(self.path, ignore_errors=True)


def _plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and os.sep not in name


def _missing_parents(folder: Path) -> list[Path]:
    missing: list[Path] = []
    p = folder
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    return missing


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def staging_siblings(final: str | os.PathLike[str]) -> list[Path]:
    """The ``.<name>.<pid>.tmp`` siblings of ``final`` that exist now (any process, files or folders)."""
    final = Path(final)
    return sorted(final.parent.glob(f".{glob.escape(final.name)}.*.tmp"))


def remove_stale_staging(final: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries of ``final`` (this module's ``.<name>.<pid>.tmp`` files and folders) left
    by processes that no longer exist (killed, or a machine that lost power); returns them."""
    removed = []
    for p in staging_siblings(final):
        pid = p.name[len(Path(final).name) + 2 : -len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            removed.append(p)
    return removed
