"""Start ``vggtctl view`` / ``vggtctl app`` as a child process and read the URL it prints."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Sequence

from tests.procs import ROOT, spawn


def wait_for_url(proc: subprocess.Popen[bytes]) -> str:
    """The first stdout line's URL (``http://...  (details)``); fails with stderr if the child dies.

    The line comes once the server listens; the test's own timeout bounds the wait."""
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("http"):
        proc.kill()
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise AssertionError(f"no URL on stdout (got {line!r}); stderr:\n{err}")
    return line.split()[0]


def get(url: str, timeout: float = 30) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback only
        return r.status, r.read().decode("utf-8", "replace")


@contextlib.contextmanager
def served(*args: object) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``python -m vggtctl ARGS`` (a server command) running, with its URL."""
    cmd: Sequence[str] = [sys.executable, "-m", "vggtctl", *map(str, args)]
    with spawn(cmd, cwd=ROOT) as proc:
        yield proc, wait_for_url(proc)
