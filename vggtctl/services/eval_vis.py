"""Pictures of an evaluation: per-frame depth/error PNGs and a coloured error point cloud per scene.

PNG panels (left to right): input image, ground-truth depth, aligned predicted depth (both on the same
turbo scale: 2nd–98th percentile of the valid ground truth, near = red), and the relative error
|d − d*| / d* (black = 0, white ≥ ``max_rel_error``). Pixels without ground truth are black in the last
three panels. The error cloud stores every (voxelised, aligned) predicted point with its distance to the
ground truth as a float ``error`` property and as a colour (turbo, blue = 0, red ≥ ``max_error`` metres).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from vggtctl.io.ply import write_ply
from vggtctl.utils.atomic import atomic_write_bytes


def _label(panel: np.ndarray, text: str) -> np.ndarray:
    cv2.putText(panel, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(panel, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return panel


def _colour_depth(depth: np.ndarray, valid: np.ndarray, lo: float, hi: float) -> np.ndarray:
    # inverse depth spreads near and far structure evenly across the colour map
    inv = np.where(valid, 1.0 / np.maximum(depth, 1e-6), 0.0)
    a, b = 1.0 / hi, 1.0 / lo
    t = np.clip((inv - a) / max(b - a, 1e-12), 0, 1)
    bgr = cv2.applyColorMap((t * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    bgr[~valid] = 0
    return bgr


def render_depth_panel(
    pred: np.ndarray, gt: np.ndarray, image: np.ndarray | None = None, max_rel_error: float = 0.25
) -> np.ndarray:
    """One frame's panel as a BGR uint8 array ``[H, 3W or 4W, 3]``.

    Args:
        pred: Aligned predicted depth ``[H, W]``.
        gt: Ground-truth depth ``[H, W]``, 0 where invalid.
        image: The model input ``[3, H, W]`` in [0, 1] (skipped when None).
        max_rel_error: Relative error shown as white.
    """
    valid = np.isfinite(gt) & (gt > 0)
    g = gt[valid]
    lo, hi = (float(np.percentile(g, 2)), float(np.percentile(g, 98))) if g.size else (1.0, 2.0)
    hi = max(hi, lo * 1.001)
    pred_ok = np.isfinite(pred) & (pred > 0)
    panels = []
    if image is not None:
        rgb = (np.clip(np.asarray(image).transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)
        panels.append(_label(np.ascontiguousarray(rgb[..., ::-1]), "image"))
    panels.append(_label(_colour_depth(gt, valid, lo, hi), "ground truth"))
    panels.append(_label(_colour_depth(pred, pred_ok, lo, hi), "prediction"))
    rel = np.where(valid, np.abs(np.where(pred_ok, pred, 0.0) - gt) / np.where(valid, gt, 1.0), 0.0)
    err = (np.clip(rel / max_rel_error, 0, 1) * 255).astype(np.uint8)
    err_bgr = cv2.applyColorMap(err, cv2.COLORMAP_INFERNO)
    err_bgr[~valid] = 0
    panels.append(_label(err_bgr, f"abs rel (white >= {max_rel_error:g})"))
    return np.concatenate(panels, axis=1)


def save_depth_maps(
    out_dir: str | os.PathLike[str],
    frame_names: Sequence[str],
    pred: np.ndarray,
    gt: np.ndarray,
    images: np.ndarray | None = None,
    alignment: str = "median",
) -> list[Path]:
    """Write ``<out_dir>/depth_<frame stem>.png`` for every frame (atomically).

    Args:
        out_dir: Folder (created).
        frame_names: Frame names (``dslr_images_undistorted/DSC_0001.JPG``), one per depth map.
        pred: Aligned predicted depth ``[S, H, W]``.
        gt: Ground-truth depth ``[S, H, W]``.
        images: Model inputs ``[S, 3, H, W]`` or None.
        alignment: Name of the alignment used, written into the file name.

    Returns:
        The written paths.
    """
    out = Path(out_dir)
    paths = []
    for i, name in enumerate(frame_names):
        img = None if images is None else np.asarray(images[i])
        panel = render_depth_panel(np.asarray(pred[i]), np.asarray(gt[i]), img)
        ok, buf = cv2.imencode(".png", panel)
        if not ok:  # pragma: no cover - cv2 only fails on invalid arrays
            raise RuntimeError(f"PNG encoding failed for {name}")
        path = out / f"depth_{Path(name).stem}_{alignment}.png"
        atomic_write_bytes(path, buf.tobytes())
        paths.append(path)
    return paths


def save_error_cloud(
    path: str | os.PathLike[str], points: np.ndarray, errors: np.ndarray, max_error: float = 0.5
) -> Path:
    """Write a binary PLY of ``points`` coloured by ``errors`` (turbo, red ≥ ``max_error``) with an
    ``error`` float property.

    Returns:
        The written path.
    """
    errors = np.asarray(errors, dtype=np.float32).reshape(-1)
    t = (np.clip(errors / max_error, 0, 1) * 255).astype(np.uint8)
    rgb = cv2.applyColorMap(t.reshape(-1, 1), cv2.COLORMAP_TURBO).reshape(-1, 3)[:, ::-1]
    write_ply(path, points, rgb=rgb, scalars={"error": errors})
    return Path(path)
