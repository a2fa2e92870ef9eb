"""The software versions a ``meta.json`` / report records (from package metadata: nothing is imported)."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

from vggtctl import __version__

VERSIONED = (
    "torch",
    "numpy",
    "scipy",
    "numba",
    "pillow",
    "safetensors",
    "huggingface_hub",
    "typer",
    "peft",
    "transformers",
)


def versions(packages: tuple[str, ...] = VERSIONED) -> dict[str, str]:
    """``vggtctl``, ``python``, ``platform`` and every installed one of ``packages``."""
    out = {"vggtctl": __version__, "python": platform.python_version(), "platform": sys.platform}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
