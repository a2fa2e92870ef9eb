"""GPU memory and utilisation through NVML (nvidia-ml-py). Never raises: without a driver or GPU the
report says why."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class GpuInfo:
    """One GPU as NVML sees it (NVML indexes; ``CUDA_VISIBLE_DEVICES`` does not renumber them)."""

    index: int
    name: str
    memory_used_mb: float
    memory_total_mb: float
    utilization_pct: float | None
    memory_utilization_pct: float | None


@dataclass
class GpuReport:
    """``available`` False comes with a ``note`` saying why (no NVML library, no driver, no GPU)."""

    available: bool
    gpus: list[GpuInfo] = field(default_factory=list)
    driver: str | None = None
    note: str | None = None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
                h = nv.nvmlDeviceGetHandleByIndex(i)
                mem = nv.nvmlDeviceGetMemoryInfo(h)
                try:
                    util = nv.nvmlDeviceGetUtilizationRates(h)
                    gpu_util, mem_util = float(util.gpu), float(util.memory)
                except Exception:  # noqa: BLE001 - not supported on some GPUs / MIG slices
                    gpu_util = mem_util = None
                gpus.append(
                    GpuInfo(
                        i,
                        _text(nv.nvmlDeviceGetName(h)),
                        mem.used / 2**20,
                        mem.total / 2**20,
                        gpu_util,
                        mem_util,
                    )
                )
            except Exception as e:  # noqa: BLE001
                log.debug("GPU %d: %s", i, e)
        return GpuReport(True, gpus, driver)


def query_gpus() -> GpuReport:
    """One-shot GPU report (initialises and shuts down NVML)."""
    with NvmlSession() as nvml:
        return nvml.query()
