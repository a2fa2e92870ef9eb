"""Where and how a job runs: device, compute precision, process rank and GPU facts.

One place for what ``infer``, ``evaluate``, ``env``, ``monitor`` and the run directory each decided on
their own before: :mod:`~vggtctl.runtime.device` (``cpu``, ``cuda``, ``cuda:N``, ``auto``),
:mod:`~vggtctl.runtime.precision` (``--dtype`` incl. ``auto`` on CPU from the CPU's bf16 support, and the
autocast context), :mod:`~vggtctl.runtime.dist` (``RANK``/``LOCAL_RANK``/``WORLD_SIZE``) and
:mod:`~vggtctl.runtime.gpu` (one :class:`~vggtctl.runtime.gpu.GpuInfo`). :mod:`~vggtctl.runtime.versions`
is what every ``meta.json`` records about the software.

Importing this package never imports torch: the CLI parses and validates ``--device``/``--dtype`` with it.
"""

from __future__ import annotations

from vggtctl.runtime.device import DeviceSpec, device_problem, parse_device, resolve_device
from vggtctl.runtime.dist import DistInfo, dist_info, is_rank_zero
from vggtctl.runtime.precision import (
    DTYPE_CHOICES,
    CpuBf16,
    DtypeChoice,
    autocast,
    check_dtype_name,
    cpu_bf16_support,
    resolve_dtype,
)
from vggtctl.runtime.versions import versions

__all__ = [
    "DTYPE_CHOICES",
    "CpuBf16",
    "DeviceSpec",
    "DistInfo",
    "DtypeChoice",
    "autocast",
    "check_dtype_name",
    "cpu_bf16_support",
    "device_problem",
    "dist_info",
    "is_rank_zero",
    "parse_device",
    "resolve_device",
    "resolve_dtype",
    "versions",
]
