"""Device selection: parse ``cpu`` / ``cuda`` / ``cuda:N`` / ``auto`` (pure), then resolve it against torch.

:func:`parse_device` is string parsing only (the check is :func:`vggtctl.utils.devices.device_problem`,
which configs and the CLI use before torch is imported); :func:`resolve_device` asks torch what exists.
"""

from __future__ import annotations

from dataclasses import dataclass

from vggtctl.errors import UsageError
from vggtctl.utils.devices import DEVICE_CHOICES, device_problem, normalize_device

__all__ = ["DEVICE_CHOICES", "DeviceSpec", "device_problem", "parse_device", "resolve_device"]
_HINT = "use auto, cpu, cuda or cuda:N (N = a GPU index that `vggtctl env` lists)"


@dataclass(frozen=True)
class DeviceSpec:
    """A parsed device request: ``kind`` is auto, cpu or cuda; ``index`` only for ``cuda:N``."""

    kind: str
    index: int | None = None

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


def parse_device(spec: str) -> DeviceSpec:
    """``"cuda:1"`` -> ``DeviceSpec("cuda", 1)``; no torch needed.

    Raises:
        UsageError: Not a device request.
    """
    problem = device_problem(spec)
    if problem is not None:
        raise UsageError(f"device {spec!r}: {problem}", _HINT)
    kind, _, index = normalize_device(spec).partition(":")
    return DeviceSpec(kind, int(index) if index else None)


def resolve_device(spec: str = "auto") -> str:
    """The torch device string to run on: ``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``.

    ``cuda:N`` is checked against ``torch.cuda.device_count()`` (indices count the GPUs that
    ``CUDA_VISIBLE_DEVICES`` leaves visible), so a wrong index fails here, before a model loads.

    Raises:
        UsageError: Not a device request, CUDA asked for without a usable GPU, or an index out of range.
    """
    parsed = parse_device(spec)
    if parsed.kind == "cpu":
        return "cpu"
    import torch

    available = bool(torch.cuda.is_available())
    if parsed.kind == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise UsageError(
            f"device {spec!r} asked for, but torch {torch.__version__} sees no CUDA GPU",
            "use device cpu, or install a CUDA build of torch (docs/install.md)",
        )
    count = torch.cuda.device_count()
    if parsed.index is not None and parsed.index >= count:
        raise UsageError(
            f"device {spec!r} asked for, but only {count} CUDA GPU(s) are visible (cuda:0..cuda:{count - 1})",
            "pick an index that `vggtctl env` lists, or check CUDA_VISIBLE_DEVICES",
        )
    return str(parsed)
