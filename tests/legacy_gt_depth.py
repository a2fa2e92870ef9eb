"""The ground-truth depth path as the ETH3D reader computed it before the data layer, kept verbatim.

It builds whole-image lookup tables (~1 GB at 6048x4032) and is the oracle that the bounded-memory
``vggtctl.data.depth`` must match bit for bit; ``benchmarks/bench_gt_depth.py`` measures it as "before".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vggtctl.data import camera_models
from vggtctl.errors import InputError

_EDGE_RATIO = 1.05
_PLANAR_TOL = 0.1


def legacy_model_grid_depth(scene: Any, frame: Any, geom: Any, tables: dict | None = None) -> np.ndarray:
    """``resample_depth(scene.gt_depth(frame), geom)`` exactly as evaluate computed it before."""
    return resample_depth(legacy_gt_depth(scene, frame, tables), geom)


def legacy_gt_depth(scene: Any, frame: Any, tables: dict | None = None) -> np.ndarray:
    """The old ``Eth3dScene.gt_depth``: whole-image maps, then one ``sample_depth`` call.

    ``tables``: keep the maps and the grid per camera between calls, as the old reader did (one camera).
    """
    depth = scene.raw_depth(frame)
    mask = scene.mask(frame)
    cam_d = scene.distorted_camera(frame)[0]
    key = (frame.camera_id, cam_d.id)
    if tables is not None and key in tables:
        xs, ys, query, ratio, grid = tables[key]
    else:
        xs, ys, query, ratio = _undistorted_to_distorted(scene, frame)
        grid = camera_models.normalized_grid(cam_d)
        if tables is not None:
            tables.clear()
            tables[key] = (xs, ys, query, ratio, grid)
    return sample_depth(depth, mask, xs, ys, ratio, grid=grid, query=query)


def _undistorted_to_distorted(self: Any, frame: Any) -> tuple[np.ndarray, ...]:
    """For each undistorted pixel centre: distorted pixel x, y, normalised distorted coordinates and
    the z_u / z_d ratio (float32 maps; cached per camera by the old reader)."""
    cam_d, ext_d = self.distorted_camera(frame)
    cam_u = self.cameras[frame.camera_id]
    r_rel = ext_d[:, :3] @ frame.extrinsic[:, :3].T
    c_u = -frame.extrinsic[:, :3].T @ frame.extrinsic[:, 3]
    c_d = -ext_d[:, :3].T @ ext_d[:, 3]
    assert np.linalg.norm(c_u - c_d) <= 1e-3
    xs = np.empty((cam_u.height, cam_u.width), np.float64)
    ys = np.empty_like(xs)
    ratio = np.empty((cam_u.height, cam_u.width), np.float32)
    query = np.empty((cam_u.height, cam_u.width, 2), np.float64)
    identity = np.allclose(r_rel, np.eye(3), atol=1e-12)
    rows = max(1, 2_000_000 // max(cam_u.width, 1))  # bound temporaries at full 6000x4000 resolution
    for r0 in range(0, cam_u.height, rows):
        r1 = min(cam_u.height, r0 + rows)
        grid = camera_models.pixel_centers(cam_u.width, r1 - r0)
        grid[..., 1] += r0
        n_u = camera_models.cam_from_img(cam_u, grid)
        d = np.concatenate([n_u, np.ones_like(n_u[..., :1])], axis=-1)
        if not identity:
            d = d @ r_rel.T
        pix = camera_models.img_from_cam(cam_d, d)
        xs[r0:r1], ys[r0:r1] = pix[..., 0], pix[..., 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            query[r0:r1] = d[..., :2] / d[..., 2:3]
        # the same 3-D point has z_d = s * d_z and z_u = s, so z_u = z_d / d_z
        ratio[r0:r1] = np.where(d[..., 2] > 0, 1.0 / np.where(d[..., 2] > 0, d[..., 2], 1.0), np.nan)
    return xs, ys, query, ratio


def sample_depth(
    depth: np.ndarray,
    mask: np.ndarray | None,
    xs: np.ndarray,
    ys: np.ndarray,
    ratio: np.ndarray | None = None,
    *,
    grid: np.ndarray | None = None,
    query: np.ndarray | None = None,
) -> np.ndarray:
    """Sample a depth map at pixel positions (pixel-corner convention) without crossing invalid pixels.

    Inverse depth is interpolated between the four surrounding pixel centres when they lie on one
    surface: all valid and either within 5 % of each other or locally planar (second differences over
    the 4x4 neighbourhood small against first differences; a plane passes even at grazing angles, a step
    edge does not). Otherwise the pixel that contains the point is used as is, so depth edges are never
    blended. With ``grid`` and ``query`` (normalised camera coordinates of the depth pixel centres and of
    the sample points) the interpolation is barycentric in normalised coordinates, where the inverse
    depth of a plane is exactly affine, so planes are reproduced exactly even through lens distortion;
    without them it is bilinear in pixels.

    Args:
        depth: ``(h, w)`` depth, invalid where not finite or <= 0.
        mask: optional ``(h, w)`` ETH3D mask; pixels with value 2 are invalid.
        xs: x positions, any shape.
        ys: y positions, same shape.
        ratio: optional factor applied to every sample (e.g. z_u / z_d), same shape.
        grid: optional ``(h, w, 2)`` normalised coordinates of the depth map's pixel centres.
        query: optional ``[..., 2]`` normalised coordinates of the sample points (with ``grid``).

    Returns:
        float32 array shaped like ``xs``; 0 where no valid sample exists.
    """
    h, w = depth.shape
    valid = np.isfinite(depth) & (depth > 0)
    if mask is not None:
        valid &= mask != 2
    # inverse depth padded by 2 invalid (0) pixels so 4x4 neighbourhoods never index out of bounds
    inv = np.zeros((h + 4, w + 4), dtype=np.float64)
    inv[2:-2, 2:-2] = np.where(valid, 1.0 / np.where(valid, depth, 1.0), 0.0)
    shape = np.shape(xs)
    xs = np.asarray(xs, dtype=np.float64).reshape(-1)
    ys = np.asarray(ys, dtype=np.float64).reshape(-1)
    rat = None if ratio is None else np.asarray(ratio, dtype=np.float64).reshape(-1)
    qn = None if query is None or grid is None else np.asarray(query).reshape(-1, 2)
    out = np.zeros(xs.shape, dtype=np.float32)
    step = 1 << 20  # bounds the 16 gathered neighbourhood arrays at full ETH3D resolution
    for s0 in range(0, len(xs), step):
        sl = slice(s0, s0 + step)
        vals = _sample_chunk(inv, xs[sl], ys[sl], h, w, grid, None if qn is None else qn[sl])
        if rat is not None:
            vals = vals * np.where(np.isfinite(rat[sl]), rat[sl], 0.0)
        out[sl] = vals
    return out.reshape(shape)


def _sample_chunk(
    inv: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    h: int,
    w: int,
    grid: np.ndarray | None = None,
    query: np.ndarray | None = None,
) -> np.ndarray:
    inside = np.isfinite(xs) & np.isfinite(ys) & (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    xs = np.where(inside, xs, 0.0)
    ys = np.where(inside, ys, 0.0)
    # nearest: the pixel that contains the point (+2: padding)
    near = inv[np.floor(ys).astype(np.int64) + 2, np.floor(xs).astype(np.int64) + 2]
    out = np.where(inside & (near > 0), 1.0 / np.where(near > 0, near, 1.0), 0.0)
    gx, gy = xs - 0.5, ys - 0.5
    j0 = np.floor(gx).astype(np.int64)
    i0 = np.floor(gy).astype(np.int64)
    tx, ty = gx - j0, gy - i0
    # P[r][c] = inv at row i0 - 1 + r, column j0 - 1 + c
    P = [[inv[i0 + 1 + r, j0 + 1 + c] for c in range(4)] for r in range(4)]
    v00, v01, v10, v11 = P[1][1], P[1][2], P[2][1], P[2][2]
    vmin = np.minimum(np.minimum(v00, v01), np.minimum(v10, v11))
    vmax = np.maximum(np.maximum(v00, v01), np.maximum(v10, v11))
    central = inside & (vmin > 0)
    close = vmax <= vmin * _EDGE_RATIO
    g = np.maximum(
        np.maximum(np.abs(v01 - v00), np.abs(v11 - v10)), np.maximum(np.abs(v10 - v00), np.abs(v11 - v01))
    )
    tol = _PLANAR_TOL * g + 1e-9 * vmax
    planar = np.ones_like(central)
    for r in (1, 2):
        planar &= (P[r][0] > 0) & (P[r][3] > 0)
        planar &= np.abs(P[r][0] - 2 * P[r][1] + P[r][2]) <= tol
        planar &= np.abs(P[r][1] - 2 * P[r][2] + P[r][3]) <= tol
    for c in (1, 2):
        planar &= (P[0][c] > 0) & (P[3][c] > 0)
        planar &= np.abs(P[0][c] - 2 * P[1][c] + P[2][c]) <= tol
        planar &= np.abs(P[1][c] - 2 * P[2][c] + P[3][c]) <= tol
    smooth = central & (close | planar)
    if grid is None or query is None:
        interp = (v00 * (1 - tx) + v01 * tx) * (1 - ty) + (v10 * (1 - tx) + v11 * tx) * ty
    else:
        interp = _barycentric(grid, query, i0, j0, tx + ty <= 1.0, (v00, v01, v10, v11), h, w)
    return np.where(smooth, 1.0 / np.where(smooth, interp, 1.0), out)


def _barycentric(
    grid: np.ndarray,
    query: np.ndarray,
    i0: np.ndarray,
    j0: np.ndarray,
    lower: np.ndarray,
    v: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    h: int,
    w: int,
) -> np.ndarray:
    """Interpolate over the triangle (00, 01, 10) or (11, 10, 01) of the 2x2 cell, in normalised coordinates."""
    i0c, j0c = np.clip(i0, 0, h - 2), np.clip(j0, 0, w - 2)
    n00 = grid[i0c, j0c].astype(np.float64)
    n01 = grid[i0c, j0c + 1].astype(np.float64)
    n10 = grid[i0c + 1, j0c].astype(np.float64)
    n11 = grid[i0c + 1, j0c + 1].astype(np.float64)
    v00, v01, v10, v11 = v
    low = lower[:, None]
    a = np.where(low, n00, n11)
    b, c = n01, n10
    va = np.where(lower, v00, v11)
    e1, e2, p = b - a, c - a, query.astype(np.float64) - a
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    det = np.where(np.abs(det) > 0, det, 1.0)
    lb = (p[:, 0] * e2[:, 1] - p[:, 1] * e2[:, 0]) / det
    lc = (e1[:, 0] * p[:, 1] - e1[:, 1] * p[:, 0]) / det
    return va + lb * (v01 - va) + lc * (v10 - va)


def resample_depth(depth: np.ndarray, geom: Any) -> np.ndarray:
    """Resample a depth map to the model resolution of ``geom`` without interpolating across invalid pixels.

    Every original pixel centre maps to the model pixel ``floor(orig * scale_xy + offset_xy)``; a model
    pixel that receives valid samples takes their (lower) median, an actual sample, so depth edges are
    never blended. A model pixel that receives no sample centre (upsampling) takes the original pixel that
    contains its own centre, if valid. Invalid: not finite or <= 0.

    Args:
        depth: ``(orig_h, orig_w)`` depth map, 0/inf/NaN invalid.
        geom: an ``ImageGeometry`` (or anything with ``orig_hw``, ``out_hw``, ``scale_xy``, ``offset_xy``).

    Returns:
        ``out_hw`` float32 depth, 0 where invalid.
    """
    depth = np.asarray(depth)
    h, w = (int(v) for v in geom.orig_hw)
    if depth.shape != (h, w):
        raise InputError(f"depth map is {depth.shape}, the image geometry expects {(h, w)}")
    oh, ow = (int(v) for v in geom.out_hw)
    sx, sy = (float(v) for v in geom.scale_xy)
    ox, oy = (float(v) for v in geom.offset_xy)
    out = np.zeros(oh * ow, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    ii, jj = np.nonzero(valid)
    vals = depth[ii, jj].astype(np.float32)
    jo = np.floor((jj + 0.5) * sx + ox).astype(np.int64)
    io = np.floor((ii + 0.5) * sy + oy).astype(np.int64)
    keep = (jo >= 0) & (jo < ow) & (io >= 0) & (io < oh)
    flat, vals = io[keep] * ow + jo[keep], vals[keep]
    if flat.size:
        order = np.lexsort((vals, flat))
        flat_s, vals_s = flat[order], vals[order]
        uniq, start, count = np.unique(flat_s, return_index=True, return_counts=True)
        out[uniq] = vals_s[start + (count - 1) // 2]
    # which model pixels contain at least one original pixel centre (valid or not)
    cols = np.floor((np.arange(w) + 0.5) * sx + ox).astype(np.int64)
    rows = np.floor((np.arange(h) + 0.5) * sy + oy).astype(np.int64)
    col_hit = np.zeros(ow, bool)
    row_hit = np.zeros(oh, bool)
    col_hit[cols[(cols >= 0) & (cols < ow)]] = True
    row_hit[rows[(rows >= 0) & (rows < oh)]] = True
    covered = (row_hit[:, None] & col_hit[None, :]).reshape(-1)
    # upsampling: model pixels without any original centre look up the pixel containing their centre
    empty = ~covered
    if empty.any():
        eo = np.nonzero(empty)[0]
        x = (eo % ow + 0.5 - ox) / sx
        y = (eo // ow + 0.5 - oy) / sy
        j = np.floor(x).astype(np.int64)
        i = np.floor(y).astype(np.int64)
        ins = (j >= 0) & (j < w) & (i >= 0) & (i < h)
        eo, i, j = eo[ins], i[ins], j[ins]
        v = valid[i, j]
        out[eo[v]] = depth[i[v], j[v]]
    return out.reshape(oh, ow)
