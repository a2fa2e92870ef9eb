"""Device strings (``auto``, ``cpu``, ``cuda``, ``cuda:N``): the one check every command and config uses.

A pure string check, no torch import: the CLI validates ``--device`` before anything heavy loads, and
whether the device exists is decided later, where torch is loaded.
"""

from __future__ import annotations

import re

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def device_problem(device: str) -> str | None:
    """Why ``device`` is not a device string, or None when it is one."""
    if _DEVICE.fullmatch(device.strip().lower()):
        return None
    return f"not a device (use {', '.join(DEVICE_CHOICES)})"


def normalize_device(device: str) -> str:
    """``" CUDA:1 "`` -> ``"cuda:1"`` (call after :func:`device_problem` returned None)."""
    return device.strip().lower()
