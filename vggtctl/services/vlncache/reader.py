"""The reader training uses: open a cache for a model + spec, ``lookup(sample) -> tensor | None``.

A lookup hashes the sample's frame files (once per file and process), derives the key under the
reader's spec and loads the entry when the manifest has it. A cache built with another model, layer,
preprocessing, dtype or history mode never answers: every lookup misses and one
:class:`CacheSpecWarning` says what differs. With ``required=True`` a miss raises
:class:`CacheMissError` instead (``--cache-required``): a trainer then never silently falls back.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vggtctl.errors import InputError

from .entries import decode_entry, frame_sha256, missing_frames
from .layout import CacheDir
from .records import CacheSample
from .spec import CacheSpec

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor


class CacheSpecWarning(UserWarning):
    """The cache was built under another spec: its entries are not used."""


class CacheMissError(InputError):
    """A required cache entry is missing."""


class FeatureCache:
    """Read-only view of a cache for one spec. Counts ``hits`` and ``misses``."""

    def __init__(self, cache_dir: str | os.PathLike[str], spec: CacheSpec, *, required: bool = False) -> None:
        self.cache = CacheDir(Path(cache_dir))
        self.spec = spec
        self.required = required
        self.hits = 0
        self.misses = 0
        header_spec = self.cache.current_spec()  # raises on a newer format / no cache
        specs = self.cache.specs()
        self.mismatch: str | None = None
        if spec.spec_id not in specs:
            self.mismatch = "; ".join(spec.differences(header_spec))
            warnings.warn(
                f"VGGT feature cache {cache_dir} was built with another spec ({self.mismatch}): every lookup "
                "misses and features are computed live",
                CacheSpecWarning,
                stacklevel=3,
            )
        self._keys = {r.key for (s, _), r in self.cache.rows().items() if s == spec.spec_id}

    def __len__(self) -> int:
        return len(self._keys)

    def key(self, sample: CacheSample | Sequence[str | os.PathLike[str]]) -> str:
        """The key of a sample (a :class:`CacheSample` or its ordered frame paths)."""
        frames = sample.frames if isinstance(sample, CacheSample) else tuple(Path(p) for p in sample)
        lost = missing_frames(frames)
        if lost:
            raise InputError(
                f"missing frames: {', '.join(map(str, lost[:5]))}", "check the sample's image paths"
            )
        return self.spec.key([frame_sha256(f) for f in frames])

    def lookup_with_grid(
        self, sample: CacheSample | Sequence[str | os.PathLike[str]]
    ) -> tuple[Tensor, tuple[int, int]] | None:
        """``(features [P, C], (h, w))`` of a sample, or ``None`` on a miss."""
        key = None if self.mismatch else self.key(sample)
        path = self.cache.entry_path(key) if key is not None and key in self._keys else None
        if path is not None and path.is_file():
            try:
                value = decode_entry(path)
            except (OSError, ValueError, RuntimeError, KeyError):
                value = None
            if value is not None:
                self.hits += 1
                return value
        self.misses += 1
        if self.required:
            raise CacheMissError(
                f"no cached VGGT features for sample with frames {_frames_of(sample)[:2]}...",
                "build them with `vggtctl cache build`, or drop --cache-required to encode live",
            )
        return None

    def lookup(self, sample: CacheSample | Sequence[str | os.PathLike[str]]) -> Tensor | None:
        """The sample's cached features ``[P, C]`` (storage dtype, CPU), or ``None`` on a miss."""
        found = self.lookup_with_grid(sample)
        return None if found is None else found[0]

    def stats(self) -> dict[str, Any]:
        total = self.hits + self.misses
        return {"hits": self.hits, "misses": self.misses, "hit_rate": self.hits / total if total else 0.0}


def _frames_of(sample: Any) -> list[str]:
    return [str(f) for f in (sample.frames if isinstance(sample, CacheSample) else sample)]


def open_cache(
    cache_dir: str | os.PathLike[str],
    model: Any,
    *,
    layer: int = 22,
    image_width: int = 644,
    mode: str = "crop",
    dtype: str = "bf16",
    history: str = "streaming",
    required: bool = False,
) -> FeatureCache:
    """Open a cache for ``model`` (a loaded VGGT, for its weights sha256) and the spec of its values.

    The compute dtype follows the build's rule from the model's device: fp32 on CPU, ``dtype`` on CUDA.

    Raises:
        InputError: Not a cache, or a cache of a newer format version.
    """
    from .worker import make_spec

    device = next(model.parameters()).device.type
    compute = "fp32" if device == "cpu" or dtype == "fp32" else dtype
    spec = make_spec(model, compute, layer, image_width, mode, dtype, history)
    return FeatureCache(cache_dir, spec, required=required)
