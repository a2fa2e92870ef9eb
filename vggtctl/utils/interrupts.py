"""Where Ctrl-C may land.

Python raises ``KeyboardInterrupt`` at whatever bytecode the main thread runs next. When that bytecode
belongs to Python code that native code called back (safetensors/Rust calling torch, torch's C++ calling
Python, ``PyObject_HasAttr`` probes), the native caller may swallow the exception, turn it into another
error, or, in C++ that cannot pass it on, abort the process. :func:`deferred_interrupts` holds SIGINT for
a block that must not be cut (a commit of renames); :func:`interrupt_at_safe_points` holds it while
native code runs such callbacks and raises it at the next bytecode of vggtctl's own code instead.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT inside the block; if one came, raise ``KeyboardInterrupt`` when the block ends.

    Outside the main thread (where Python delivers no signals) this does nothing. A SIGINT that was
    ignored before the block (``nohup``, background jobs) stays ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending and previous is not signal.SIG_IGN:
            if callable(previous):
                previous(signal.SIGINT, None)
            raise KeyboardInterrupt
