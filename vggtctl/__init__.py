"""vggtctl: one CLI and Python package for VGGT workflows.

Importing the package is cheap: torch and the model are only imported when
``load_model`` is first used (so ``vggtctl --help`` stays fast).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_model"]

if TYPE_CHECKING:  # pragma: no cover
    from vggtctl.services.model_loader import load_model


def __getattr__(name: str) -> Any:
    if name == "load_model":
        from vggtctl.services.model_loader import load_model

        return load_model
    raise AttributeError(f"module 'vggtctl' has no attribute {name!r}")
