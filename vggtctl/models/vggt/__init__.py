"""VGGT, key-for-key compatible with ``facebook/VGGT-1B`` and numerically faithful to the reference.

Modules: ``config`` (presets, no torch), ``model`` (:class:`VGGT`), ``build`` (meta build, zero-copy
strict load, config inference), ``geometry`` (pose encoding, unprojection), ``tiny`` (seeded test
weights), and the parts: ``aggregator``, ``patch_embed``, ``layers``, ``rope``, ``camera_head``,
``dpt_head``, ``track_head``/``tracker``, ``streaming`` (frame-causal streaming with a K/V cache).

Names are resolved lazily so ``import vggtctl.models.vggt.config`` does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .build import build_empty, from_state_dict, infer_config
    from .config import PRESETS, VGGTConfig, get_config
    from .model import VGGT
    from .streaming import JANUSVLN_WINDOW, AggregatorStream, KVWindow, kv_bytes_per_frame

_EXPORTS = {
    "VGGT": "model",
    "VGGTConfig": "config",
    "PRESETS": "config",
    "get_config": "config",
    "build_empty": "build",
    "from_state_dict": "build",
    "infer_config": "build",
    "AggregatorStream": "streaming",
    "KVWindow": "streaming",
    "JANUSVLN_WINDOW": "streaming",
    "kv_bytes_per_frame": "streaming",
}

__all__ = [
    "JANUSVLN_WINDOW",
    "PRESETS",
    "VGGT",
    "AggregatorStream",
    "KVWindow",
    "VGGTConfig",
    "build_empty",
    "from_state_dict",
    "get_config",
    "infer_config",
    "kv_bytes_per_frame",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vggtctl.models.vggt' has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)
