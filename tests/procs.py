"""Child processes in tests: a known signal state, and always reaped.

A shell starts background jobs (``nohup make test &``) with SIGINT ignored, and a child inherits that:
Python then never installs its Ctrl-C handler, and a test that sends SIGINT waits forever. Every test
that spawns a process it will signal goes through :func:`spawn`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _default_signals() -> None:
    # Runs in the child between fork and exec: the dispositions a terminal's foreground job gets.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child running this checkout's vggtctl."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT), **extra}


@contextlib.contextmanager
def spawn(args: Sequence[str], **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    """``Popen`` with SIGINT/SIGTERM at their defaults, killed and reaped when the block ends."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    kwargs.setdefault("env", child_env())
    proc = subprocess.Popen(list(args), preexec_fn=_default_signals, **kwargs)  # noqa: PLW1509
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def run_interrupted(
    target: str, *vggtctl_args: Any, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``vggtctl ARGS`` in a child that gets a real SIGINT when ``target`` is first called."""
    cmd = [sys.executable, "-m", "tests.scripts.interrupt_at", target, "--", *map(str, vggtctl_args)]
    with spawn(cmd, cwd=ROOT) as proc:
        out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(cmd, proc.returncode, out.decode(), err.decode())
