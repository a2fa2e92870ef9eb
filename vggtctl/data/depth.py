"""Ground-truth depth on the model's pixel grid, computed frame by frame in bounded memory.

ETH3D publishes depth in the *distorted* (THIN_PRISM_FISHEYE) image. The model sees the undistorted
(PINHOLE) image, resized and cropped or padded. :func:`model_grid_depth` goes straight from the first
to the last: it walks the undistorted image in bands of rows, turns every pixel centre into a ray,
projects it into the distorted image, samples the depth there without interpolating across invalid
pixels (:func:`sample_depth`) and pools the band into the model pixels it covers
(:func:`resample_depth`'s rule). Only one band of rows exists at a time, so memory is the source depth
map plus a few tens of MB, instead of the ~1 GB of per-camera lookup tables a whole-image mapping needs
at 6048x4032. The bands follow model rows, so each model pixel sees all of its samples at once and the
result is exactly what mapping the whole image first and resampling it afterwards gives.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Protocol

import numpy as np

from vggtctl.data import camera_models
from vggtctl.errors import InputError
from vggtctl.io.colmap import Camera

log = logging.getLogger(__name__)

# Bilinear sampling of inverse depth is used only when the 2x2 neighbours agree within this ratio;
# otherwise they straddle a depth edge and the nearest sample is taken instead.
_EDGE_RATIO = 1.05
# ...or when their inverse depth is locally affine: second differences within this fraction of the
# first differences (a plane seen at a grazing angle passes, a step edge does not).
_PLANAR_TOL = 0.1
# Samples per band of undistorted rows: bounds the ~50 float64 temporaries of a band to ~25 MB.
_BAND_SAMPLES = 1 << 16
# Pixels per block of the distorted camera's normalised grid (see _GridLookup) and the coarse lattice
# step of its starting guess (as camera_models.normalized_grid).
_GRID_BLOCK_PIXELS = 1 << 16
_GRID_STRIDE = 16
# Budget of the process-wide store of grid blocks (one whole ETH3D camera is ~190 MB); 0: no reuse.
GRID_CACHE_BYTES = 256 << 20
_GRID_BLOCKS: OrderedDict[tuple[object, int], np.ndarray] = OrderedDict()


class GeometryLike(Protocol):
    """What the resampling needs of an ``ImageGeometry``."""

    orig_hw: tuple[int, int]
    out_hw: tuple[int, int]

    @property
    def scale_xy(self) -> tuple[float, float]: ...

    offset_xy: tuple[float, float]


# ---------------------------------------------------------------------------------------------------
# Sampling a depth map at arbitrary positions


def padded_inverse(depth: np.ndarray, mask: np.ndarray | None, rows: slice | None = None) -> np.ndarray:
    """Inverse depth (0 where invalid) padded by 2 invalid pixels, float64; optionally only some rows.

    Args:
        depth: ``(h, w)`` depth, invalid where not finite or <= 0.
        mask: optional ``(h, w)`` ETH3D mask; 2 is invalid.
        rows: rows of the *padded* array to build (``slice(0, h + 4)`` when None).
    """
    h, w = depth.shape
    lo, hi = (0, h + 4) if rows is None else (rows.start, rows.stop)
    inv = np.zeros((hi - lo, w + 4), dtype=np.float64)
    s0, s1 = max(lo - 2, 0), min(hi - 2, h)  # source rows inside the band
    if s1 > s0:
        d = depth[s0:s1]
        valid = np.isfinite(d) & (d > 0)
        if mask is not None:
            valid &= mask[s0:s1] != 2
        inv[s0 + 2 - lo : s1 + 2 - lo, 2:-2] = np.where(valid, 1.0 / np.where(valid, d, 1.0), 0.0)
    return inv


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
    inv = padded_inverse(depth, mask)
    shape = np.shape(xs)
    xs = np.asarray(xs, dtype=np.float64).reshape(-1)
    ys = np.asarray(ys, dtype=np.float64).reshape(-1)
    rat = None if ratio is None else np.asarray(ratio, dtype=np.float64).reshape(-1)
    qn = None if query is None or grid is None else np.asarray(query).reshape(-1, 2)
    out = np.zeros(xs.shape, dtype=np.float32)
    step = 1 << 20  # bounds the 16 gathered neighbourhood arrays at full ETH3D resolution
    for s0 in range(0, len(xs), step):
        sl = slice(s0, s0 + step)
        vals = _sample_chunk(inv, 0, xs[sl], ys[sl], h, w, grid, None if qn is None else qn[sl])
        if rat is not None:
            vals = vals * np.where(np.isfinite(rat[sl]), rat[sl], 0.0)
        out[sl] = vals
    return out.reshape(shape)


def _inside(xs: np.ndarray, ys: np.ndarray, h: int, w: int) -> np.ndarray:
    return np.isfinite(xs) & np.isfinite(ys) & (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)


def _band_rows(ys: np.ndarray, inside: np.ndarray) -> slice:
    """Rows of the padded inverse depth that the 4x4 neighbourhoods of the inside points touch."""
    if not inside.any():
        return slice(0, 0)
    top = np.floor(ys[inside] - 0.5).astype(np.int64)
    return slice(int(top.min()) + 1, int(top.max()) + 5)


def _sample_chunk(
    inv: np.ndarray,
    row0: int,
    xs: np.ndarray,
    ys: np.ndarray,
    h: int,
    w: int,
    grid: _GridLookup | np.ndarray | None = None,
    query: np.ndarray | None = None,
) -> np.ndarray:
    """Sample points against ``inv``, the rows ``row0:`` of the padded inverse depth (float64 result)."""
    inside = _inside(xs, ys, h, w)
    if not inside.any():
        return np.zeros(xs.shape, dtype=np.float64)
    # Outside points get a stand-in position inside the band; every one of their results is masked out.
    xs = np.where(inside, xs, 0.0)
    ys = np.where(inside, ys, ys[inside][0])
    # nearest: the pixel that contains the point (+2: padding)
    near = inv[np.floor(ys).astype(np.int64) + 2 - row0, np.floor(xs).astype(np.int64) + 2]
    out = np.where(inside & (near > 0), 1.0 / np.where(near > 0, near, 1.0), 0.0)
    gx, gy = xs - 0.5, ys - 0.5
    j0 = np.floor(gx).astype(np.int64)
    i0 = np.floor(gy).astype(np.int64)
    tx, ty = gx - j0, gy - i0
    # P[r][c] = inv at row i0 - 1 + r, column j0 - 1 + c
    P = [[inv[i0 + 1 + r - row0, j0 + 1 + c] for c in range(4)] for r in range(4)]
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
    grid: _GridLookup | np.ndarray,
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


class _GridLookup:
    """The distorted camera's normalised pixel-centre grid, built block by block as rows are asked for.

    The coarse lattice and the per-block Newton polish are those of :func:`camera_models.normalized_grid`;
    the blocks are smaller (64k pixels, so the Newton temporaries stay ~20 MB) and give the same float32
    values (checked at 6048x4032: the polish converges per pixel to ~1e-14). Blocks live in a process-wide
    store bounded by :data:`GRID_CACHE_BYTES`, so the frames of one camera reuse them (~190 MB for a whole
    ETH3D camera) instead of repeating the ~10-30 s inversion per frame; 0 recomputes them every frame.
    """

    def __init__(self, camera: Camera) -> None:
        self.camera = camera
        self.block = max(1, _GRID_BLOCK_PIXELS // camera.width)
        self.key = (
            camera.model,
            camera.width,
            camera.height,
            tuple(float(v) for v in camera.params),
            self.block,
        )
        self._coarse: tuple[np.ndarray, ...] | None = None
        self._local: OrderedDict[int, np.ndarray] = OrderedDict()  # used when the shared store is off

    def _lattice(self) -> tuple[np.ndarray, ...]:
        if self._coarse is None:
            cam, w, h = self.camera, self.camera.width, self.camera.height
            cols = np.unique(np.r_[np.arange(0, w, _GRID_STRIDE), w - 1])
            rows = np.unique(np.r_[np.arange(0, h, _GRID_STRIDE), h - 1])
            gx, gy = np.meshgrid(cols + 0.5, rows + 0.5)
            coarse = camera_models.cam_from_img(cam, np.stack([gx, gy], axis=-1))
            xs = np.arange(w)
            ci = np.clip(np.searchsorted(cols, xs, side="right") - 1, 0, len(cols) - 2)
            tx = ((xs - cols[ci]) / (cols[ci + 1] - cols[ci]))[None, :, None]
            self._coarse = (rows, coarse, ci, tx)
        return self._coarse

    def _compute(self, b: int) -> np.ndarray:
        cam, w, h = self.camera, self.camera.width, self.camera.height
        r0 = b * self.block
        ys = np.arange(r0, min(h, r0 + self.block))
        grid = camera_models.pixel_centers(w, len(ys))
        grid[..., 1] += r0
        if cam.model != "THIN_PRISM_FISHEYE":
            return camera_models.cam_from_img(cam, grid).astype(np.float32)
        rows, coarse, ci, tx = self._lattice()
        ri = np.clip(np.searchsorted(rows, ys, side="right") - 1, 0, len(rows) - 2)
        ty = ((ys - rows[ri]) / (rows[ri + 1] - rows[ri]))[:, None, None]
        top = coarse[ri][:, ci] * (1 - tx) + coarse[ri][:, ci + 1] * tx
        bot = coarse[ri + 1][:, ci] * (1 - tx) + coarse[ri + 1][:, ci + 1] * tx
        guess = top * (1 - ty) + bot * ty
        return camera_models.cam_from_img(cam, grid, init=guess).astype(np.float32)

    def _get(self, b: int) -> np.ndarray:
        store, key = (_GRID_BLOCKS, (self.key, b)) if GRID_CACHE_BYTES > 0 else (self._local, b)
        hit = store.get(key)  # type: ignore[call-overload]
        if hit is not None:
            store.move_to_end(key)  # type: ignore[arg-type]
            return hit
        hit = self._compute(b)
        store[key] = hit  # type: ignore[index]
        budget = GRID_CACHE_BYTES if GRID_CACHE_BYTES > 0 else 8 * hit.nbytes
        while len(store) > 1 and sum(v.nbytes for v in store.values()) > budget:
            store.popitem(last=False)
        return hit

    def __getitem__(self, index: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        i, j = index
        out = np.empty((len(i), 2), dtype=np.float32)
        blk = i // self.block
        for b in np.unique(blk):
            sel = blk == b
            out[sel] = self._get(int(b))[i[sel] - int(b) * self.block, j[sel]]
        return out


# ---------------------------------------------------------------------------------------------------
# Resampling to the model grid


def resample_depth(depth: np.ndarray, geom: GeometryLike) -> np.ndarray:
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
    pool = _Pooling(geom)
    if depth.shape != (pool.h, pool.w):
        raise InputError(f"depth map is {depth.shape}, the image geometry expects {(pool.h, pool.w)}")
    pool.add_rows(0, depth)
    return pool.result()


class _Pooling:
    """:func:`resample_depth`'s rule, fed one band of original rows at a time.

    A band must hold every original row of the model rows it touches (see :meth:`bands`); then each
    model pixel's median is taken over exactly the samples the whole-image computation would use.
    """

    def __init__(self, geom: GeometryLike) -> None:
        self.h, self.w = (int(v) for v in geom.orig_hw)
        self.oh, self.ow = (int(v) for v in geom.out_hw)
        self.sx, self.sy = (float(v) for v in geom.scale_xy)
        self.ox, self.oy = (float(v) for v in geom.offset_xy)
        self.out = np.zeros(self.oh * self.ow, dtype=np.float32)
        self.rows = np.floor((np.arange(self.h) + 0.5) * self.sy + self.oy).astype(np.int64)
        cols = np.floor((np.arange(self.w) + 0.5) * self.sx + self.ox).astype(np.int64)
        # which model pixels contain at least one original pixel centre (valid or not)
        col_hit = np.zeros(self.ow, bool)
        row_hit = np.zeros(self.oh, bool)
        col_hit[cols[(cols >= 0) & (cols < self.ow)]] = True
        row_hit[self.rows[(self.rows >= 0) & (self.rows < self.oh)]] = True
        covered = (row_hit[:, None] & col_hit[None, :]).reshape(-1)
        # upsampling: model pixels without any original centre look up the pixel containing their centre
        eo = np.nonzero(~covered)[0]
        x = (eo % self.ow + 0.5 - self.ox) / self.sx
        y = (eo // self.ow + 0.5 - self.oy) / self.sy
        j = np.floor(x).astype(np.int64)
        i = np.floor(y).astype(np.int64)
        ins = (j >= 0) & (j < self.w) & (i >= 0) & (i < self.h)
        self.empty_o, self.empty_i, self.empty_j = eo[ins], i[ins], j[ins]

    def needed_rows(self) -> np.ndarray:
        """Original rows that contribute: those inside the model frame and those looked up."""
        need = (self.rows >= 0) & (self.rows < self.oh)
        need[self.empty_i] = True
        return need

    def bands(self, max_rows: int) -> list[tuple[int, int]]:
        """``[r0, r1)`` bands of needed original rows, cut only where the model row changes."""
        need = self.needed_rows()
        out: list[tuple[int, int]] = []
        r0: int | None = None
        for r in range(self.h):
            if not need[r]:
                if r0 is not None:
                    out.append((r0, r))
                    r0 = None
            elif r0 is None:
                r0 = r
            elif r - r0 >= max_rows and self.rows[r] != self.rows[r - 1]:
                out.append((r0, r))
                r0 = r
        if r0 is not None:
            out.append((r0, self.h))
        return out

    def add_rows(self, r0: int, depth: np.ndarray) -> None:
        """Pool the original rows ``r0 : r0 + len(depth)`` (full width) into the model grid."""
        valid = np.isfinite(depth) & (depth > 0)
        ii, jj = np.nonzero(valid)
        vals = depth[ii, jj].astype(np.float32)
        ii = ii + r0
        jo = np.floor((jj + 0.5) * self.sx + self.ox).astype(np.int64)
        io = np.floor((ii + 0.5) * self.sy + self.oy).astype(np.int64)
        keep = (jo >= 0) & (jo < self.ow) & (io >= 0) & (io < self.oh)
        flat, vals = io[keep] * self.ow + jo[keep], vals[keep]
        if flat.size:
            order = np.lexsort((vals, flat))
            flat_s, vals_s = flat[order], vals[order]
            uniq, start, count = np.unique(flat_s, return_index=True, return_counts=True)
            self.out[uniq] = vals_s[start + (count - 1) // 2]
        sel = (self.empty_i >= r0) & (self.empty_i < r0 + len(depth))
        if sel.any():
            eo, i, j = self.empty_o[sel], self.empty_i[sel] - r0, self.empty_j[sel]
            v = valid[i, j]
            self.out[eo[v]] = depth[i[v], j[v]]

    def result(self) -> np.ndarray:
        return self.out.reshape(self.oh, self.ow)


# ---------------------------------------------------------------------------------------------------
# Distorted depth -> undistorted image -> model grid, band by band


def _relative_rotation(ext_u: np.ndarray, ext_d: np.ndarray, what: str) -> np.ndarray:
    r_rel = ext_d[:, :3] @ ext_u[:, :3].T
    c_u = -ext_u[:, :3].T @ ext_u[:, 3]
    c_d = -ext_d[:, :3].T @ ext_d[:, 3]
    if np.linalg.norm(c_u - c_d) > 1e-3:
        log.warning("%s: undistorted and distorted camera centres differ by %.4f m", what,
                    np.linalg.norm(c_u - c_d))  # fmt: skip
    return r_rel


def _undistorted_rows(
    inv_source: tuple[np.ndarray, np.ndarray | None],
    grid: _GridLookup,
    cam_u: Camera,
    cam_d: Camera,
    r_rel: np.ndarray,
    r0: int,
    r1: int,
) -> np.ndarray:
    """Ground-truth depth of the undistorted rows ``r0:r1`` (float32, 0 invalid)."""
    depth, mask = inv_source
    h, w = depth.shape
    pix = camera_models.pixel_centers(cam_u.width, r1 - r0)
    pix[..., 1] += r0
    n_u = camera_models.cam_from_img(cam_u, pix)
    d = np.concatenate([n_u, np.ones_like(n_u[..., :1])], axis=-1)
    if not np.allclose(r_rel, np.eye(3), atol=1e-12):
        d = d @ r_rel.T
    p = camera_models.img_from_cam(cam_d, d)
    xs, ys = p[..., 0].reshape(-1), p[..., 1].reshape(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        query = (d[..., :2] / d[..., 2:3]).reshape(-1, 2)
    # the same 3-D point has z_d = s * d_z and z_u = s, so z_u = z_d / d_z (kept in float32, as stored)
    dz = d[..., 2].reshape(-1)
    ratio = np.where(dz > 0, 1.0 / np.where(dz > 0, dz, 1.0), np.nan).astype(np.float32).astype(np.float64)
    band = _band_rows(ys, _inside(xs, ys, h, w))
    inv = padded_inverse(depth, mask, band)
    vals = _sample_chunk(inv, band.start, xs, ys, h, w, grid, query)
    vals = vals * np.where(np.isfinite(ratio), ratio, 0.0)
    return vals.astype(np.float32).reshape(r1 - r0, cam_u.width)


def model_grid_depth(
    depth: np.ndarray,
    mask: np.ndarray | None,
    cam_u: Camera,
    ext_u: np.ndarray,
    cam_d: Camera,
    ext_d: np.ndarray,
    geom: GeometryLike,
    *,
    what: str = "frame",
) -> np.ndarray:
    """Ground-truth depth of one frame on the model's pixel grid, in bounded memory.

    Args:
        depth: Raw depth of the distorted image ``(cam_d.height, cam_d.width)``, +inf/NaN/<=0 invalid.
        mask: Optional ETH3D mask of the distorted image (2 = invalid).
        cam_u: The undistorted (PINHOLE) camera.
        ext_u: Its world-to-camera ``[R|t]``.
        cam_d: The distorted camera (THIN_PRISM_FISHEYE or a pinhole model).
        ext_d: Its world-to-camera ``[R|t]``.
        geom: How the undistorted image became the model frame.
        what: Name used in warnings.

    Returns:
        ``geom.out_hw`` float32 depth, 0 where invalid; equal to
        ``resample_depth(undistorted_depth(...), geom)``.
    """
    pool = _Pooling(geom)
    if (pool.h, pool.w) != (cam_u.height, cam_u.width):
        raise InputError(
            f"depth map is {(cam_u.height, cam_u.width)}, the image geometry expects {(pool.h, pool.w)}"
        )
    r_rel = _relative_rotation(ext_u, ext_d, what)
    grid = _GridLookup(cam_d)
    for r0, r1 in pool.bands(max(1, _BAND_SAMPLES // max(cam_u.width, 1))):
        pool.add_rows(r0, _undistorted_rows((depth, mask), grid, cam_u, cam_d, r_rel, r0, r1))
    return pool.result()


def undistorted_depth(
    depth: np.ndarray,
    mask: np.ndarray | None,
    cam_u: Camera,
    ext_u: np.ndarray,
    cam_d: Camera,
    ext_d: np.ndarray,
    *,
    what: str = "frame",
) -> np.ndarray:
    """Ground-truth depth in the full undistorted image ``(cam_u.height, cam_u.width)``, float32, 0 invalid.

    Computed band by band like :func:`model_grid_depth`; only the result is image-sized.
    """
    r_rel = _relative_rotation(ext_u, ext_d, what)
    grid = _GridLookup(cam_d)
    out = np.zeros((cam_u.height, cam_u.width), dtype=np.float32)
    rows = max(1, _BAND_SAMPLES // max(cam_u.width, 1))
    for r0 in range(0, cam_u.height, rows):
        r1 = min(cam_u.height, r0 + rows)
        out[r0:r1] = _undistorted_rows((depth, mask), grid, cam_u, cam_d, r_rel, r0, r1)
    return out
