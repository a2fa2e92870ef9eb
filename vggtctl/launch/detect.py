"""Facts about this machine for :func:`vggtctl.launch.plan.build_plan`: GPUs, cores, DeepSpeed, ports.

The GPU count comes from NVML (no torch import, so ``--dry-run`` stays fast); without NVML, torch's count
(which already honours ``CUDA_VISIBLE_DEVICES``). Ports are probed by binding them on all interfaces.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import Iterable

from vggtctl.launch.plan import Detected


def port_in_use(port: int) -> bool:
    """True when ``port`` cannot be bound on this machine (someone listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("", port))
        except OSError:
            return True
    return False


def free_port() -> int:
    """A port the OS says is free now; it may be taken again before use.

    Only plans that must name their port use it (the deepspeed runner, several nodes): a one-node torchrun
    plan lets torchrun bind port 0 itself. The runner holds a one-node deepspeed plan's port from its start
    and moves it when it was taken in between (:mod:`vggtctl.launch.port_hold`).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def _gpus() -> tuple[int, bool]:
    from vggtctl.runtime.gpu import query_gpus

    report = query_gpus()
    if report.available:
        return len(report.gpus), False
    if importlib.util.find_spec("torch") is None:
        return 0, True
    try:
        import torch

        return (torch.cuda.device_count() if torch.cuda.is_available() else 0), True
    except Exception:  # noqa: BLE001 - a broken CUDA install means no usable GPU
        return 0, True


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, as under taskset or a SLURM allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def detect(ports: Iterable[int] = ()) -> Detected:
    """Probe the machine.

    Args:
        ports: Ports to check for use (the requested and the default rendezvous ports).
    """
    gpus, visible = _gpus()
    return Detected(
        gpus=gpus,
        gpus_visible=visible,
        cpus=cpu_count(),
        deepspeed=importlib.util.find_spec("deepspeed") is not None,
        busy_ports=frozenset(p for p in set(ports) if 0 < p < 65536 and port_in_use(p)),
        spare_port=free_port(),
    )
