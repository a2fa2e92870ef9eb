"""GPU facts: one :class:`GpuInfo` whether torch or NVML (nvidia-ml-py) reported it. Never raises.

``vggtctl env`` asks torch (names, memory, compute capability of the GPUs torch can use) and NVML
(the driver; GPUs torch cannot use); ``vggtctl monitor --gpu`` asks NVML repeatedly for memory in use
and utilisation. Both return the same record; fields a source does not know stay ``None``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class GpuInfo:
    """One GPU.

    ``index`` is the source's numbering: torch's counts the GPUs ``CUDA_VISIBLE_DEVICES`` leaves visible,
    NVML's counts every GPU of the machine (``source`` says which). Memory is in MiB.
    """

    index: int
    name: str
    memory_total_mb: float | None = None
    memory_used_mb: float | None = None
    utilization_pct: float | None = None
    memory_utilization_pct: float | None = None
    compute_capability: str | None = None
    source: str = "nvml"


@dataclass
class GpuReport:
    """``available`` False comes with a ``note`` saying why (no NVML library, no driver, no GPU)."""

    available: bool
    gpus: list[GpuInfo] = field(default_factory=list)
    driver: str | None = None
    note: str | None = None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def torch_gpus() -> list[GpuInfo]:
    """The GPUs torch can use (empty without CUDA). Raises whatever torch raises: callers report it."""
    import torch

    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        out.append(
            GpuInfo(
                i,
                props.name,
                memory_total_mb=float(props.total_memory // 2**20),
                compute_capability=f"{props.major}.{props.minor}",
                source="torch",
            )
        )
    return out


class NvmlSession:
    """NVML initialised once for repeated queries (``--follow``); use as a context manager."""

    def __init__(self) -> None:
        self._nvml: ModuleType | None = None
        self._note: str | None = None

    def __enter__(self) -> NvmlSession:
        try:
            import pynvml
        except ImportError:
            self._note = "nvidia-ml-py is not installed (pip install nvidia-ml-py); GPU figures unavailable"
            return self
        try:
            pynvml.nvmlInit()
        except Exception as e:  # noqa: BLE001 - NVMLError subclasses, or OSError from a broken library
            self._note = f"no NVIDIA driver here (NVML: {e}); GPU figures unavailable on this machine"
            return self
        self._nvml = pynvml
        return self

    def __exit__(self, *exc: object) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001 - shutting down a library that already failed
                log.debug("nvmlShutdown failed", exc_info=True)
            self._nvml = None

    def query(self) -> GpuReport:
        """Memory used/total and utilisation of every GPU."""
        nv = self._nvml
        if nv is None:
            return GpuReport(False, note=self._note or "NVML not initialised")
        try:
            driver = _text(nv.nvmlSystemGetDriverVersion())
            count = nv.nvmlDeviceGetCount()
        except Exception as e:  # noqa: BLE001
            return GpuReport(False, note=f"NVML query failed: {e}")
        if count == 0:
            return GpuReport(False, driver=driver, note="NVML found no GPU on this machine")
        gpus = []
        for i in range(count):
            try:
                gpus.append(self._one(nv, i))
            except Exception as e:  # noqa: BLE001
                log.debug("GPU %d: %s", i, e)
        return GpuReport(True, gpus, driver)

    @staticmethod
    def _one(nv: ModuleType, i: int) -> GpuInfo:
        h = nv.nvmlDeviceGetHandleByIndex(i)
        mem = nv.nvmlDeviceGetMemoryInfo(h)
        try:
            util = nv.nvmlDeviceGetUtilizationRates(h)
            gpu_util, mem_util = float(util.gpu), float(util.memory)
        except Exception:  # noqa: BLE001 - not supported on some GPUs / MIG slices
            gpu_util = mem_util = None
        try:
            major, minor = nv.nvmlDeviceGetCudaComputeCapability(h)
            cc: str | None = f"{major}.{minor}"
        except Exception:  # noqa: BLE001 - old drivers
            cc = None
        return GpuInfo(
            i,
            _text(nv.nvmlDeviceGetName(h)),
            memory_total_mb=mem.total / 2**20,
            memory_used_mb=mem.used / 2**20,
            utilization_pct=gpu_util,
            memory_utilization_pct=mem_util,
            compute_capability=cc,
            source="nvml",
        )


def query_gpus() -> GpuReport:
    """One-shot NVML report (initialises and shuts down NVML)."""
    with NvmlSession() as nvml:
        return nvml.query()
