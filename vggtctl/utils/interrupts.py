"""Where Ctrl-C may land.

Python raises ``KeyboardInterrupt`` at whatever bytecode the main thread runs next. When that bytecode
belongs to Python code that native code called back, the native caller decides what happens to the
exception, and often gets it wrong. In ``vggtctl infer``:

- safetensors' ``load_file`` (Rust) reads tensors through ``torch.UntypedStorage.__getitem__``
  (torch/storage.py); an interrupt there came out as ``ValueError: could not determine the shape of
  object type 'torch.storage.UntypedStorage'`` (exit 1, "bug" hint), or was lost (the run went on
  and exited 0); an interrupt during ``import torch`` was lost too;
- where torch's C++ (pybind11) runs Python and cannot pass the exception on, the process ends with
  ``terminate called after throwing an instance of 'pybind11::error_already_set'`` (reported once in
  ~20 tries; the same mechanism as above, in C++ instead of Rust).

:func:`interrupt_at_safe_points` therefore never raises in such code. The SIGINT handler raises
``KeyboardInterrupt`` when the interrupted frame is vggtctl's own code, or when no frame between it and
the nearest vggtctl frame belongs to a library whose native code calls back into Python (torch,
safetensors, numpy, ...; ``_CALLED_BACK``) or to the stdlib modules that C code calls implicitly
(warnings, weakref, copyreg, ...). Pure-Python libraries called from vggtctl (py7zr, requests,
threading, subprocess) unwind normally. Otherwise the interrupt stays pending and the main thread
is signalled again every 20 ms until it is at such a point (vggtctl code runs between native calls:
every model layer, every download chunk, every stage), so Ctrl-C still stops long work promptly.
:func:`deferred_interrupts` holds SIGINT for a block that must not be cut at all (the renames that
commit an output folder).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

_OWN_PACKAGE = __name__.split(".")[0]
# Top-level modules whose Python code native code calls back: a KeyboardInterrupt raised there goes
# through C, C++ (pybind11) or Rust, which may swallow it, turn it into another error, or abort.
_CALLED_BACK = frozenset(
    {
        "torch",
        "safetensors",
        "numpy",
        "PIL",
        "cv2",
        "scipy",
        "pycolmap",
        "matplotlib",
        "warnings",
        "weakref",
        "_weakrefset",
        "copyreg",
        "abc",
        "linecache",
        "encodings",
    }  # fmt: skip
)
_POLL_S = 0.02


def is_safe_frame(frame: FrameType | None) -> bool:
    """True when raising ``KeyboardInterrupt`` in ``frame`` unwinds to vggtctl code through Python only
    (as far as the frames tell): no frame of a ``_CALLED_BACK`` module above the nearest vggtctl frame."""
    if frame is None:
        return False
    while frame is not None:
        top = str(frame.f_globals.get("__name__", "")).split(".")[0]
        if top == _OWN_PACKAGE:
            return True
        if top in _CALLED_BACK:
            return False
        frame = frame.f_back
    return True


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT inside the block; if one came, raise ``KeyboardInterrupt`` when the block ends.

    Outside the main thread (where Python delivers no signals) this does nothing. A SIGINT that was
    ignored before the block (``nohup``, background jobs) stays ignored.
    """
    if not _in_main_thread():
        yield
        return
    pending: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending and previous not in (signal.SIG_IGN, None):
            raise KeyboardInterrupt


class _SafePoints:
    def __init__(self) -> None:
        self.pending = False
        self.done = False
        self.stop = threading.Event()
        self.poker: threading.Thread | None = None

    def handler(self, signum: int, frame: FrameType | None) -> None:
        if self.done:
            return
        if is_safe_frame(frame):
            self.pending = False
            raise KeyboardInterrupt
        self.pending = True
        if self.poker is None:
            self.poker = threading.Thread(target=self._poke, name="vggtctl-interrupt", daemon=True)
            self.poker.start()

    def _poke(self) -> None:
        # Re-run the handler soon: by then the main thread is usually back in vggtctl code. A real
        # signal (not _thread.interrupt_main) also wakes a main thread blocked in a system call.
        main = threading.main_thread().ident
        while not self.stop.wait(_POLL_S):
            if self.pending and not self.done and main is not None:
                signal.pthread_kill(main, signal.SIGINT)

    def close(self) -> None:
        self.done = True
        self.stop.set()
        if self.poker is not None:
            self.poker.join()
        _run_pending_handlers()


def _run_pending_handlers() -> None:
    # A poke still in flight is delivered at the next system call and handled at the next check of
    # the eval loop, while our handler is installed and ``done``: it does nothing then.
    time.sleep(0.001)
    (lambda: None)()


@contextlib.contextmanager
def interrupt_at_safe_points() -> Iterator[None]:
    """Inside the block, Ctrl-C raises ``KeyboardInterrupt`` only in vggtctl's own code (see the module).

    An interrupt still pending when the block ends is raised then. Outside the main thread, or when
    SIGINT is ignored or not handled by Python, this changes nothing.
    """
    previous = signal.getsignal(signal.SIGINT) if _in_main_thread() else None
    if previous is None or previous in (signal.SIG_IGN, signal.SIG_DFL):
        yield
        return
    points = _SafePoints()
    signal.signal(signal.SIGINT, points.handler)
    try:
        yield
    finally:
        points.close()
        signal.signal(signal.SIGINT, previous)
    if points.pending:
        raise KeyboardInterrupt
