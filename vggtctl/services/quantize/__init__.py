"""``vggtctl quantize``: int8 VGGT artifacts that save, load back through ``load_model`` and are measured.

Modules: :mod:`.config` (options, validation), :mod:`.selection` (which layers), :mod:`.observers`
and :mod:`.calibration` (static ranges), :mod:`.hadamard` (rotation), :mod:`.modules` (own int8
layers), :mod:`.apply` (float -> quantized, and the same structure on meta), :mod:`.artifact`
(files, loader registration), :mod:`.compare` (the float-vs-quantized report), :mod:`.run` (the
workflow). Importing this package imports no torch.
"""

from __future__ import annotations

from .config import FORMAT_VERSION, OBSERVERS, ROTATIONS, TYPES, QuantizeConfig

__all__ = ["FORMAT_VERSION", "OBSERVERS", "ROTATIONS", "TYPES", "QuantizeConfig"]
