"""How ``vggtctl view`` and ``vggtctl app`` run their server: URL out, then wait for Ctrl-C or SIGTERM.

Ctrl-C (SIGINT) stops the server and exits 130, as every interrupted vggtctl command does; SIGTERM (a
scheduler, ``kill``, a service manager stopping it) is the asked-for way to end a server and exits 0.
Either way the server is stopped before the process ends, so the port is free again at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

import typer

from vggtctl.cli.output import Output
from vggtctl.errors import EXIT_INTERRUPTED, EXIT_OK
from vggtctl.utils.interrupts import deferred_interrupts

POLL_S = 0.25


def serve_until_stopped(output: Output, stop: Callable[[], None], what: str) -> None:
    """Block until SIGINT (exit 130) or SIGTERM (exit 0), then call ``stop`` and exit.

    Call it after the server has started and its URL was printed (``output.result``).
    """
    terminated = threading.Event()

    def _on_sigterm(_signum: int, _frame: Any) -> None:
        terminated.set()

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    code = EXIT_OK
    try:
        output.info(f"{what} is running; Ctrl-C stops it")
        try:
            while not terminated.wait(POLL_S):
                pass
            output.info(f"{what} stopped (SIGTERM)")
        except KeyboardInterrupt:
            output.info(f"{what} stopped (Ctrl-C)")
            code = EXIT_INTERRUPTED
    finally:
        try:
            with deferred_interrupts():  # a second Ctrl-C must not cut the shutdown short
                stop()
        finally:
            signal.signal(signal.SIGTERM, previous)
    raise typer.Exit(code)
