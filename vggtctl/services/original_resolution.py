"""Depth, confidence and intrinsics on each source image's own pixel grid (``infer --resolution original``).

VGGT predicts on the model grid (e.g. 518x392). Preprocessing resized each image by ``scale_xy`` and shifted
it by ``offset_xy`` (a crop removes rows: negative offset; padding adds them: positive offset), so a model
coordinate is ``original * scale + offset``. Here that map is undone:

- intrinsics: ``K_original = A^-1 K_model`` with ``A = [[sx, 0, ox], [0, sy, oy], [0, 0, 1]]`` (exact, see
  :func:`vggtctl.io.image_geometry.intrinsics_to_original`), so a 3-D point projects to the original pixel
  that corresponds to where it projects on the model grid;
- depth and confidence: each original pixel ``(u, v)`` takes the bilinear interpolation of the model map at
  ``(u * sx + ox, v * sy + oy)``, the pixel convention of VGGT's own unprojection (pixel ``(u, v)`` at
  coordinate ``(u, v)``). Unprojecting the original-resolution depth with ``K_original`` therefore gives
  the same 3-D points as unprojecting the model depth at the mapped coordinates with ``K_model``.
  Original pixels the model never saw (rows a crop removed, beyond the rim of the
  image region) are ``NaN`` in depth and ``0`` in confidence; ``valid`` marks the others. Interpolation
  never mixes in white padding: taps are clamped to the image region (edge values at the rim).

Depth is z along the optical axis, which a resize does not change, so values are interpolated, not scaled.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from vggtctl.io.image_geometry import ImageGeometry, intrinsics_to_original
from vggtctl.utils.atomic import atomic_open

FOLDER = "original"
RESOLUTIONS = ("model", "original")


def _axis_weights(n_out: int, scale: float, offset: float, lo: int, hi: int) -> tuple[np.ndarray, ...]:
    """Left index, right index, right weight and validity of bilinear taps along one axis.

    ``lo``/``hi`` bound the model pixels that show the image (``hi`` exclusive). A coordinate within half
    a model pixel before ``lo`` or up to one after ``hi - 1`` takes the edge value (that pixel covers it: the
    map ``u * scale + offset`` puts the last original pixel up to one model pixel past it), so the whole
    original image is covered wherever the model saw it.
    """
    coord = np.arange(n_out, dtype=np.float64) * scale + offset
    ok = (coord >= lo - 0.5) & (coord < hi)
    c = np.clip(coord, lo, max(hi - 1, lo))
    left = np.floor(c).astype(np.int64)
    right = np.minimum(left + 1, max(hi - 1, lo))
    weight = c - left
    return left, right, weight, ok


def resample_to_original(values: np.ndarray, geom: ImageGeometry, fill: float = np.nan) -> np.ndarray:
    """Map one model-grid map ``[H, W]`` onto the original image's ``[H0, W0]`` grid (bilinear, float32).

    Args:
        values: the map on the model grid (depth, confidence, ...).
        geom: how the original image became this frame.
        fill: value for original pixels the model did not see (cropped away or next to padding).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.shape != tuple(geom.out_hw):
        raise ValueError(f"map of shape {values.shape} for a frame of {geom.out_hw}")
    h0, w0 = geom.orig_hw
    sx, sy = geom.scale_xy
    ox, oy = geom.offset_xy
    rh, rw = geom.resized_hw
    h, w = geom.out_hw
    xl, xr, xw, xok = _axis_weights(w0, sx, ox, max(ox, 0), min(ox + rw, w))
    yl, yr, yw, yok = _axis_weights(h0, sy, oy, max(oy, 0), min(oy + rh, h))
    cols = values[:, xl] * (1 - xw) + values[:, xr] * xw  # [H, W0]
    out = cols[yl, :] * (1 - yw)[:, None] + cols[yr, :] * yw[:, None]  # [H0, W0]
    out[~(yok[:, None] & xok[None, :])] = fill
    return out.astype(np.float32)


def valid_original(geom: ImageGeometry) -> np.ndarray:
    """``[H0, W0]`` bool: original pixels that have a prediction (see :func:`resample_to_original`)."""
    return np.isfinite(resample_to_original(np.zeros(geom.out_hw), geom))


def frame_at_original(preds: Mapping[str, np.ndarray], i: int, geom: ImageGeometry) -> dict[str, np.ndarray]:
    """Frame ``i``'s depth, confidence, intrinsics (original pixels) and extrinsics."""
    depth = np.asarray(preds["depth"][i])
    depth = depth[..., 0] if depth.ndim == 3 else depth
    return {
        "depth": resample_to_original(depth, geom),
        "depth_conf": np.nan_to_num(resample_to_original(preds["depth_conf"][i], geom), nan=0.0),
        "valid": valid_original(geom),
        "intrinsic": intrinsics_to_original(preds["intrinsic"][i], geom),
        "extrinsic": np.asarray(preds["extrinsic"][i], dtype=np.float64),
        "orig_hw": np.array(geom.orig_hw, dtype=np.int64),
    }


def frame_file(index: int) -> str:
    """Name of frame ``index``'s file under ``original/``."""
    return f"frame_{index:06d}.npz"


def write_original_resolution(
    out_dir: str | os.PathLike[str],
    preds: Mapping[str, np.ndarray],
    geoms: Sequence[ImageGeometry],
    names: Sequence[str],
) -> Path:
    """Write ``out_dir/original/frame_NNNNNN.npz`` per frame (one frame in memory at a time).

    Each file holds ``depth [H0,W0]`` (NaN where unseen), ``depth_conf [H0,W0]`` (0 there), ``valid``,
    ``intrinsic [3,3]`` in original pixels, ``extrinsic [3,4]``, ``orig_hw`` and ``name``.

    Returns:
        The folder.
    """
    folder = Path(out_dir) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for i, (geom, name) in enumerate(zip(geoms, names, strict=True)):
        arrays = frame_at_original(preds, i, geom)
        with atomic_open(folder / frame_file(i), "wb") as f:
            np.savez(f, name=np.array(str(name)), **arrays)  # type: ignore[arg-type]
    return folder


def load_original_frame(out_dir: str | os.PathLike[str], index: int) -> dict[str, np.ndarray]:
    """Read back frame ``index`` written by :func:`write_original_resolution`."""
    with np.load(Path(out_dir) / FOLDER / frame_file(index)) as z:
        return {k: z[k] for k in z.files}
