"""DeepSpeed's log lines go to stderr, never into a command's stdout (``--json`` results, printed tables).

DeepSpeed's logger ("DeepSpeed") writes through a ``StreamHandler(sys.stdout)`` it creates on import, and its
import logs at once (``Setting accelerator to CPU ...`` on a CPU machine, ``Setting ds_accelerator to cuda``
on a GPU one). transformers' modeling code and PEFT import DeepSpeed when it is installed, so
``vggtctl train-vln init-tiny --json`` printed that line before its JSON. :func:`deepspeed_logs_to_stderr`
imports DeepSpeed (when installed and not imported yet) while ``sys.stdout`` is stderr, so its handler writes
to stderr, and points a handler created before at stderr too. Call it before whatever imports DeepSpeed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys

LOGGER = "DeepSpeed"


class _Stderr:
    """Whatever ``sys.stderr`` is at each write (a test runner's capture, a redirected one, the real one)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


STDERR = _Stderr()


def deepspeed_logs_to_stderr() -> None:
    """Import DeepSpeed with its log handler on stderr (nothing when DeepSpeed is not installed)."""
    if "deepspeed" not in sys.modules:
        if importlib.util.find_spec("deepspeed") is None:
            return
        with contextlib.redirect_stdout(STDERR):  # type: ignore[type-var]
            import deepspeed  # noqa: F401 - the import creates the handler and logs
    for handler in logging.getLogger(LOGGER).handlers:
        if type(handler) is logging.StreamHandler and handler.stream not in (
            STDERR,
            sys.stderr,
            sys.__stderr__,
        ):
            handler.setStream(STDERR)  # type: ignore[arg-type]
