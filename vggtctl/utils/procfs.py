"""Sizes read from Linux's /proc (kB fields as bytes); ``None`` where /proc or the field is missing."""

from __future__ import annotations

from pathlib import Path


def proc_bytes(path: str, field: str) -> int | None:
    """The ``field:`` line of ``path`` (e.g. ``/proc/self/status``, ``VmHWM``) in bytes."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def status_bytes(field: str) -> int | None:
    """This process's ``/proc/self/status`` field (``VmRSS``, ``VmHWM``, ``RssFile``...) in bytes."""
    return proc_bytes("/proc/self/status", field)


def meminfo_bytes(field: str) -> int | None:
    """A ``/proc/meminfo`` field (``MemAvailable``...) in bytes."""
    return proc_bytes("/proc/meminfo", field)
