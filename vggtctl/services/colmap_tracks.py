"""2-D observations for the points of a COLMAP export: where each point was seen.

A depth-map point comes from one pixel of one frame; that pixel is its first observation. It is also
observed in every other frame where it projects inside the image (not into white padding), in front of
the camera, onto a pixel whose own predicted depth agrees with the point's depth there (within a
relative tolerance) and whose confidence reaches the export threshold: the point is visible there, not
hidden behind something nearer. These tracks are what COLMAP's tools (``point_filtering``,
``bundle_adjuster``, ``image_undistorter``) need to treat the export as a reconstruction.

Pixel convention: VGGT's (pixel ``(u, v)`` at coordinate ``(u, v)``, as its unprojection uses), the same
one the exported intrinsics use, so every observation reprojects with zero error through the predicted
cameras. Mapping them to original pixels uses the same affine map as the intrinsics
(:meth:`ImageGeometry.to_original`), which keeps that property.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vggtctl.io.image_geometry import ImageGeometry

DEPTH_TOLERANCE = 0.02  # relative: |depth_j(pixel) - z_j(point)| <= 2% of z_j


@dataclass
class Observations:
    """Flat observations, one row each: point ``point[k]`` seen in frame ``frame[k]`` at ``xy[k]``.

    ``point`` indexes the exported points (0-based), ``frame`` the frames (0-based).
    """

    point: np.ndarray  # (M,) int64
    frame: np.ndarray  # (M,) int64
    xy: np.ndarray  # (M, 2) float64

    def __len__(self) -> int:
        return len(self.point)

    def per_frame(self, frames: int) -> np.ndarray:
        """Number of observations in each of ``frames`` frames."""
        return np.bincount(self.frame, minlength=frames)

    def to_original(self, geoms: Sequence[ImageGeometry]) -> Observations:
        """The same observations in each frame's original pixels."""
        xy = self.xy.copy()
        for i, g in enumerate(geoms):
            sel = self.frame == i
            xy[sel] = g.to_original(xy[sel])
        return Observations(self.point, self.frame, xy)


def valid_region(geom: ImageGeometry) -> np.ndarray:
    """``[H, W]`` bool: model pixels that show the image (not white padding)."""
    h, w = geom.out_hw
    ox, oy = geom.offset_xy
    rh, rw = geom.resized_hw
    mask = np.zeros((h, w), dtype=bool)
    mask[max(oy, 0) : max(min(oy + rh, h), 0), max(ox, 0) : max(min(ox + rw, w), 0)] = True
    return mask


def project(xyz: np.ndarray, extrinsic: np.ndarray, intrinsic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project world points ``[N, 3]`` into one camera: ``(xy [N, 2], z [N])`` (z = depth)."""
    E = np.asarray(extrinsic, dtype=np.float64)
    cam = np.asarray(xyz, dtype=np.float64) @ E[:, :3].T + E[:, 3]
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uvw = cam @ np.asarray(intrinsic, dtype=np.float64).T
        xy = uvw[:, :2] / uvw[:, 2:3]
    return xy, z


def depth_agreement_observations(
    xyz: np.ndarray,
    pixel_index: np.ndarray,
    depth: np.ndarray,
    conf: np.ndarray,
    extrinsic: np.ndarray,
    intrinsic: np.ndarray,
    geoms: Sequence[ImageGeometry],
    *,
    conf_threshold: float,
    depth_tolerance: float = DEPTH_TOLERANCE,
) -> Observations:
    """Observations of depth-map points: their source pixel plus the frames where depth agrees.

    Args:
        xyz: ``[N, 3]`` world points, one per selected pixel.
        pixel_index: ``[N]`` flat index ``frame * H * W + row * W + col`` of each point's source pixel.
        depth: ``[S, H, W]`` (or ``[S, H, W, 1]``) predicted z-depth.
        conf: ``[S, H, W]`` confidence of that depth.
        extrinsic: ``[S, 3, 4]`` world-to-camera; ``intrinsic``: ``[S, 3, 3]`` model pixels.
        geoms: per-frame geometry (for the padding mask).
        conf_threshold: a projection counts only onto a pixel at least this confident.
        depth_tolerance: relative depth agreement required.

    Returns:
        Observations in model pixels, sorted by point then frame; every point has its source-frame
        observation (its projection there, or its pixel when it projects behind that camera).
    """
    depth = np.asarray(depth)
    if depth.ndim == 4:
        depth = depth[..., 0]
    s, h, w = depth.shape
    n = len(xyz)
    src_frame = pixel_index // (h * w)
    rest = pixel_index % (h * w)
    src_xy = np.stack([rest % w, rest // w], axis=1).astype(np.float64)
    points = [np.arange(n, dtype=np.int64)]
    frames = [src_frame.astype(np.int64)]
    xys = [src_xy]
    for j in range(s):
        xy, z = project(xyz, extrinsic[j], intrinsic[j])
        with np.errstate(invalid="ignore"):
            col = np.rint(xy[:, 0])
            row = np.rint(xy[:, 1])
            inside = (z > 0) & (col >= 0) & (col < w) & (row >= 0) & (row < h) & (src_frame != j)
        # The source observation is the point's projection into its own frame: the pixel itself for
        # depth-map points (up to float32 rounding), the nearest consistent place for point-head points.
        own = np.flatnonzero((src_frame == j) & (z > 0) & np.isfinite(xy).all(axis=1))
        src_xy[own] = xy[own]
        cand = np.flatnonzero(inside)
        ci, ri = col[cand].astype(np.int64), row[cand].astype(np.int64)
        ok = valid_region(geoms[j])[ri, ci]
        ok &= conf[j, ri, ci] >= conf_threshold
        ok &= np.abs(depth[j, ri, ci] - z[cand]) <= depth_tolerance * z[cand]
        keep = cand[ok]
        points.append(keep)
        frames.append(np.full(len(keep), j, dtype=np.int64))
        xys.append(xy[keep])
    point = np.concatenate(points)
    frame = np.concatenate(frames)
    order = np.lexsort((frame, point))
    return Observations(point[order], frame[order], np.concatenate(xys)[order])
