"""Compute precision: the ``--dtype`` choice (``auto``, ``fp32``, ``bf16``, ``fp16``) and its autocast context.

``auto`` on a GPU: bf16 from compute capability 8 (Ampere) on, fp16 before. ``auto`` on a CPU: bf16 only
where the CPU computes it natively, fp32 where bf16 is emulated. The measurements behind that rule
(docs/performance.md): on an AVX2-only CPU bf16 ran 3.4x *slower* than fp32; on a Xeon with AMX the 1B
model ran 1.9x faster in bf16 (21.2 s vs 40.0 s at 2x518², parity <= 4.7e-3, peak RSS 4.4 vs 6.0 GB).
The decision comes from the CPU flags (``amx_bf16``, ``avx512_bf16`` on x86, ``bf16`` on Arm) in
``/proc/cpuinfo``; where they cannot be read, a short measured GEMM probe decides.

Only :func:`resolve_dtype` (on CUDA), :func:`probe_cpu_bf16`, :func:`autocast` and
:attr:`DtypeChoice.torch` import torch; the parsing and the flag rule are pure.
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vggtctl.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")
# The --dtype help every command shows (the CLI imports it; no torch).
DTYPE_HELP = (
    "auto = bf16 on GPUs with compute capability >= 8, fp16 on older ones; on CPUs bf16 where the CPU "
    "computes it natively (AMX/AVX512-BF16, see `vggtctl env`), else fp32."
)
# Short names (what users type) -> torch attribute names (what meta.json and results record).
_TORCH_NAMES = {
    "fp32": "float32",
    "float32": "float32",
    "float": "float32",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
}
_SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
# CPU flags that mean bf16 dot products run in hardware (x86 AMX tiles, AVX512-BF16; Arm's BF16 extension).
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")
CPUINFO = Path("/proc/cpuinfo")


def check_dtype_name(name: str) -> str | None:
    """Why ``name`` is not a dtype choice (a sentence about the value), or ``None`` when it is one."""
    if isinstance(name, str) and (name.lower() == "auto" or name.lower() in _TORCH_NAMES):
        return None
    return f"dtype {name!r} is not one of {', '.join(DTYPE_CHOICES)}"


def torch_dtype_name(name: str) -> str:
    """``"bf16"`` -> ``"bfloat16"`` (any spelling :func:`check_dtype_name` accepts, except auto).

    Raises:
        UsageError: Unknown name, or ``auto`` (which needs a device: use :func:`resolve_dtype`).
    """
    key = str(name).lower().replace("torch.", "")
    if key not in _TORCH_NAMES:
        raise UsageError(
            check_dtype_name(name) or f"dtype {name!r} needs a device to resolve", "use fp32, bf16 or fp16"
        )
    return _TORCH_NAMES[key]


# ---------------------------------------------------------------- the CPU's bf16 support


def cpu_flags(cpuinfo_text: str) -> frozenset[str]:
    """The feature flags of ``/proc/cpuinfo`` text (x86 ``flags``, Arm ``Features``); empty if it has none."""
    flags: set[str] = set()
    for line in cpuinfo_text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return frozenset(flags)


def native_bf16_flags(flags: frozenset[str] | set[str]) -> tuple[str, ...]:
    """Which of the native-bf16 flags ``flags`` has, in :data:`NATIVE_BF16_FLAGS` order."""
    return tuple(f for f in NATIVE_BF16_FLAGS if f in flags)


def cpu_auto_dtype(flags: frozenset[str] | set[str]) -> str:
    """The ``auto`` choice on a CPU with these flags: ``"bf16"`` when bf16 is native, else ``"fp32"``."""
    return "bf16" if native_bf16_flags(flags) else "fp32"


@dataclass(frozen=True)
class CpuBf16:
    """Whether this CPU computes bf16 natively, and how that was decided.

    ``native`` is ``None`` only when neither the flags nor a probe could tell. ``source`` is ``cpuinfo``
    (flags read), ``probe`` (measured) or ``unknown``; ``probe`` holds the measured GEMM times.
    """

    native: bool | None
    source: str
    flags: tuple[str, ...] = ()
    probe: dict[str, float] | None = field(default=None, compare=False)

    def describe(self) -> str:
        """One line for ``vggtctl env`` and ``meta.json``."""
        if self.source == "cpuinfo":
            if self.native:
                return f"native ({', '.join(self.flags)})"
            return "emulated (no amx_bf16/avx512_bf16 flag): fp32 is faster"
        if self.source == "probe" and self.probe is not None:
            verdict = "native" if self.native else "emulated"
            return f"{verdict} (measured: bf16 GEMM {self.probe['speedup']:.2f}x the speed of fp32)"
        return "unknown (no CPU flags readable, no probe run)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "native": self.native,
            "source": self.source,
            "flags": list(self.flags),
            "probe": self.probe,
            "summary": self.describe(),
        }


def cpu_bf16_from_cpuinfo(cpuinfo_text: str | None) -> CpuBf16:
    """The flag verdict for ``/proc/cpuinfo`` text (``None`` or flagless text: unknown)."""
    flags = cpu_flags(cpuinfo_text or "")
    if not flags:
        return CpuBf16(None, "unknown")
    found = native_bf16_flags(flags)
    return CpuBf16(bool(found), "cpuinfo", found)


def _read_cpuinfo(path: Path = CPUINFO) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


@functools.lru_cache(maxsize=1)
def probe_cpu_bf16(size: int = 512, reps: int = 6) -> dict[str, float]:
    """Time a ``size``³ GEMM in fp32 and bf16, interleaved, best of ``reps`` after a warm-up; ~0.1 s.

    Interleaving and the minimum keep a busy machine from favouring one dtype (another process that
    runs during the fp32 half only would otherwise make bf16 look faster than it is).

    Returns:
        ``fp32_ms``, ``bf16_ms`` and ``speedup`` (fp32 time / bf16 time; > 1 means bf16 is faster).
    """
    import torch

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen)
    b = torch.randn(size, size, generator=gen)
    pairs = {"fp32": (a, b), "bf16": (a.to(torch.bfloat16), b.to(torch.bfloat16))}
    best = {name: float("inf") for name in pairs}
    for x, y in pairs.values():
        x @ y
    for _ in range(reps):
        for name, (x, y) in pairs.items():
            t = time.perf_counter()
            x @ y
            best[name] = min(best[name], (time.perf_counter() - t) * 1e3)
    return {
        "fp32_ms": round(best["fp32"], 3),
        "bf16_ms": round(best["bf16"], 3),
        "speedup": round(best["fp32"] / max(best["bf16"], 1e-9), 3),
    }


def cpu_bf16_support(cpuinfo_text: str | None = None, *, probe: bool = False) -> CpuBf16:
    """This CPU's bf16 support: from the flags; from a measured probe only if ``probe`` and the flags are unknown.

    Args:
        cpuinfo_text: ``/proc/cpuinfo`` text to judge (default: read this machine's).
        probe: Measure (:func:`probe_cpu_bf16`) when the flags cannot tell.
    """
    verdict = cpu_bf16_from_cpuinfo(_read_cpuinfo() if cpuinfo_text is None else cpuinfo_text)
    if verdict.native is None and probe:
        measured = probe_cpu_bf16()
        return CpuBf16(measured["speedup"] > 1.0, "probe", (), measured)
    return verdict


# ---------------------------------------------------------------- the choice


@dataclass(frozen=True)
class DtypeChoice:
    """A resolved compute precision: ``name`` is the torch name (``float32``, ``bfloat16``, ``float16``)."""

    name: str
    requested: str
    reason: str
    # The dtype the weights are loaded in (the loader's ``dtype``): on a CPU, bf16 means bf16 weights
    # (the loader's low-memory path: 1.9x faster and 27 % less RSS with AMX, where fp32 weights under
    # autocast re-cast every weight on every matmul); on GPUs weights stay float32 under autocast.
    weights: str = "float32"

    @property
    def short(self) -> str:
        """``fp32``, ``bf16`` or ``fp16``."""
        return _SHORT[self.name]

    @property
    def torch(self) -> torch.dtype:
        import torch

        return getattr(torch, self.name)

    @property
    def load_dtype(self) -> str | None:
        """What to pass as ``load_model(dtype=...)``: ``None`` for float32 weights, else ``"bf16"``/``"fp16"``."""
        return None if self.weights == "float32" else _SHORT[self.weights]

    @property
    def autocast_dtype(self) -> str | None:
        """The ``torch.autocast`` dtype around the forward: ``None`` for fp32, and for low-precision weights
        (the model's aggregator autocasts itself to its weights' dtype; the heads stay float32)."""
        return None if self.name == "float32" or self.weights != "float32" else self.name

    def to_dict(self) -> dict[str, str]:
        return {
            "dtype": self.name,
            "weights": self.weights,
            "requested": self.requested,
            "reason": self.reason,
        }


def _weights_for(name: str, device: str) -> str:
    return "bfloat16" if name == "bfloat16" and not device.startswith("cuda") else "float32"


def resolve_dtype(requested: str = "auto", device: str = "cpu", *, cpu: CpuBf16 | None = None) -> DtypeChoice:
    """Resolve ``requested`` for ``device`` (a resolved device string such as ``cpu`` or ``cuda:1``).

    Args:
        requested: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (torch spellings work too).
        device: Where the model runs.
        cpu: This CPU's bf16 support (default: :func:`cpu_bf16_support` with the probe as fallback).

    Raises:
        UsageError: Unknown dtype name.
    """
    problem = check_dtype_name(requested)
    if problem is not None:
        raise UsageError(problem, "use auto, fp32, bf16 or fp16")
    if requested.lower() != "auto":
        name = torch_dtype_name(requested)
        return DtypeChoice(name, requested, "requested", _weights_for(name, device))
    if device.startswith("cuda"):
        import torch

        major, minor = torch.cuda.get_device_capability(torch.device(device))
        if major >= 8:
            return DtypeChoice("bfloat16", requested, f"GPU compute capability {major}.{minor} >= 8.0")
        return DtypeChoice("float16", requested, f"GPU compute capability {major}.{minor} < 8.0 (no bf16)")
    support = cpu if cpu is not None else cpu_bf16_support(probe=True)
    name = "bfloat16" if support.native else "float32"
    return DtypeChoice(name, requested, f"CPU bf16 {support.describe()}", _weights_for(name, device))


def autocast(device: str, dtype: Any) -> contextlib.AbstractContextManager[Any]:
    """The context a forward runs in: none for fp32, ``torch.autocast`` for bf16/fp16.

    Weights stay float32 and autocast lowers the matmuls, as the reference demos do; the model keeps its
    heads in float32 itself. ``dtype`` may be a :class:`DtypeChoice`, a torch dtype, a name or ``None``.
    """
    import torch

    if isinstance(dtype, DtypeChoice):
        dtype = dtype.torch
    elif isinstance(dtype, str):
        dtype = None if dtype.lower() == "auto" else getattr(torch, torch_dtype_name(dtype))
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
