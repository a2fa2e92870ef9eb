"""Import torchao quietly: on CPU-only machines it logs warnings that are not problems.

torchao 0.18 logs "Failed to load ... _C_mxfp8 / _C_cutlass_90a" (CUDA kernels), "Detected no triton"
and torch's pytree logs an Enum deprecation while torchao registers its types. None of these affect
int8 on CPU; with ``--debug`` (log level DEBUG) they are shown.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

_NOISY = ("torchao", "torch.utils._pytree")


@contextmanager
def quiet_torchao() -> Iterator[None]:
    """Raise the noisy loggers to ERROR for the block (unless the root logger is at DEBUG)."""
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    loggers = [logging.getLogger(n) for n in _NOISY]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, old, strict=True):
            lg.setLevel(level)


def import_torchao() -> None:
    """Import torchao and its quantization API once, quietly (later imports are cached)."""
    with quiet_torchao():
        import torchao.quantization  # noqa: F401 - the import is what logs
        import torchao.quantization.pt2e  # noqa: F401
