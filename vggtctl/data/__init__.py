"""The data layer: scenes as the model sees them, with ground truth on the model grid.

* :class:`~vggtctl.data.sample.SceneSample` and :func:`~vggtctl.data.sample.load_sample`: one scene's
  frames, preprocessed, with depth/validity, intrinsics and extrinsics in the model grid;
* :class:`~vggtctl.data.dataset.SceneDataset`: a ``torch.utils.data.Dataset`` drawing seeded frame sets
  (the first frame is the reference), with :func:`~vggtctl.data.dataset.collate_samples`;
* :mod:`vggtctl.data.depth`: ground-truth depth on the model grid in bounded memory;
  :mod:`vggtctl.data.cache`: its content-keyed disk cache; :mod:`vggtctl.data.frames`: frame plans;
* what those build on: :mod:`vggtctl.data.eth3d` (the ETH3D scene reader, with
  :mod:`vggtctl.data.eth3d_scan`), :mod:`vggtctl.data.camera_models` (COLMAP camera models) and
  :mod:`vggtctl.data.preprocess` (image preprocessing as the model's reference does it).

Nothing here imports ``vggtctl.services``, ``vggtctl.cli`` or ``vggtctl.launch``
(``tests/test_layers.py``). Names are imported lazily so that ``import vggtctl.data.depth`` (used by
the ETH3D reader) does not pull in torch or the reader itself. ``eth3d_archives.json`` (the pinned archive sizes) is package data
of this folder.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "SceneSample": "vggtctl.data.sample",
    "load_sample": "vggtctl.data.sample",
    "sample_from_geometries": "vggtctl.data.sample",
    "frame_depth": "vggtctl.data.sample",
    "SceneDataset": "vggtctl.data.dataset",
    "collate_samples": "vggtctl.data.dataset",
    "DepthCache": "vggtctl.data.cache",
    "model_grid_depth": "vggtctl.data.depth",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vggtctl.data' has no attribute {name!r}")
    return getattr(import_module(module), name)
