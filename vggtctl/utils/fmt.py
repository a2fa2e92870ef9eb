"""Human-readable sizes. Two scales, named as such so a caller picks one on purpose:

- :func:`bytes_si` (1 kB = 1000 B: KB, MB, GB, TB) for file and download sizes, as HTTP servers, the
  Hugging Face Hub and disk vendors count them;
- :func:`bytes_binary` (1 KiB = 1024 B: KiB, MiB, GiB, TiB) for memory, as ``nvidia-smi`` and RSS count it.
"""

from __future__ import annotations


def _scaled(n: float, base: float, units: tuple[str, ...]) -> str:
    x = float(n)
    for unit in units[:-1]:
        if abs(x) < base:
            return f"{int(x)} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= base
    return f"{x:.1f} {units[-1]}"


def bytes_si(n: float | None, unknown: str = "?") -> str:
    """``376_700_000`` -> ``"376.7 MB"`` (powers of 1000); ``None`` -> ``unknown``."""
    if n is None:
        return unknown
    return _scaled(n, 1000.0, ("B", "KB", "MB", "GB", "TB"))


def bytes_binary(n: float | None, unknown: str = "?") -> str:
    """``3 * 2**30`` -> ``"3.0 GiB"`` (powers of 1024); ``None`` -> ``unknown``."""
    if n is None:
        return unknown
    return _scaled(n, 1024.0, ("B", "KiB", "MiB", "GiB", "TiB"))
