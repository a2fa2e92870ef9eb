"""``train-vln --cache-dir``: each sample's VGGT tokens from the feature cache when it has them.

The cache is opened under the spec the run's live encoding has: the run's VGGT (weights sha256), its
``vggt_layer``, ``crop`` preprocessing at ``image_width``, streaming history and the compute dtype VGGT
runs in here (fp32 on CPU, bf16 on CUDA), built by the same :func:`~vggtctl.services.vlncache.worker.make_spec`
``vggtctl cache build`` uses. The storage dtype is the one thing that may differ: a value is the same
value rounded to bf16/fp16/fp32, cast back to the compute dtype; when the cache holds several, the most
precise is used. Any other difference makes every lookup miss with one :class:`CacheSpecWarning`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from vggtctl.services.vln.model import Spatial
from vggtctl.services.vlncache.layout import CacheDir
from vggtctl.services.vlncache.reader import CacheMissError, FeatureCache
from vggtctl.services.vlncache.worker import make_spec

#: Storage dtypes in order of preference when a cache holds the same spec in several.
_PRECISION = ("fp32", "fp16", "bf16")


def open_run_cache(
    cache_dir: str | Path, vggt: torch.nn.Module, layer: int, image_width: int
) -> FeatureCache:
    """The cache at ``cache_dir`` read under the spec of this run's live VGGT features.

    Raises:
        InputError: Not a cache, or one of a newer format version.
    """
    device = next(vggt.parameters()).device.type
    compute = "fp32" if device == "cpu" else "bf16"
    want = make_spec(vggt, compute, layer, image_width, "crop", "bf16", "streaming")
    same = {s.dtype: s for s in CacheDir(Path(cache_dir)).specs().values()
            if dataclasses.replace(s, dtype=want.dtype) == want}  # fmt: skip
    spec = next((same[d] for d in _PRECISION if d in same), want)
    return FeatureCache(cache_dir, spec)


def cached_spatial(cache: FeatureCache, sample_id: str, frames: tuple[str, ...], dtype: torch.dtype,
                   device: torch.device | str, required: bool) -> Spatial | None:  # fmt: skip
    """The sample's cached tokens as :class:`Spatial` (``dtype`` on ``device``), or ``None`` on a miss.

    Raises:
        CacheMissError: A miss with ``required`` (``--cache-required``), naming the sample.
    """
    found = cache.lookup_with_grid(frames)
    if found is None:
        if required:
            raise CacheMissError(
                f"no cached VGGT features for sample {sample_id} (current frame {frames[-1]})"
                + (f": the cache was built with another spec ({cache.mismatch})" if cache.mismatch else ""),
                "build them with `vggtctl cache build` for this --data, --vggt, vggt_layer and image_width, "
                "or drop --cache-required to encode misses live",
            )
        return None
    value, (h, w) = found
    return Spatial(value.to(device=device, dtype=dtype, non_blocking=True), h, w)
