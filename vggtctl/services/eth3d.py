"""The ETH3D high-res multi-view reader used by evaluate, finetune and infer.

A scene folder is what the per-scene ``<scene>_dslr_<kind>.7z`` archives extract to::

    <scene>/images/dslr_images_undistorted/DSC_XXXX.JPG   dslr_calibration_undistorted/  (PINHOLE)
    <scene>/images/dslr_images/DSC_XXXX.JPG               dslr_calibration_jpg/          (THIN_PRISM_FISHEYE)
    <scene>/ground_truth_depth/dslr_images/DSC_XXXX.JPG   raw little-endian float32, +inf invalid
    <scene>/masks_for_images/dslr_images/DSC_XXXX.png     uint8 0/1/2 (2 = excluded from ground truth)
    <scene>/dslr_scan_eval/scan*.ply + scan_alignment.mlp

Ground-truth depth is published in the *distorted* image. :meth:`Eth3dScene.gt_depth` maps it into the
undistorted (PINHOLE) image with the full THIN_PRISM_FISHEYE model: every undistorted pixel centre is
turned into a ray, projected into the distorted image and sampled there without ever interpolating
across invalid pixels.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vggtctl.errors import InputError
from vggtctl.io.colmap import Camera, Image, read_cameras_text, read_images_text
from vggtctl.services import camera_models

log = logging.getLogger(__name__)

TRAINING_SCENES: tuple[str, ...] = (
    "courtyard", "delivery_area", "electro", "facade", "kicker", "meadow", "office",
    "pipes", "playground", "relief", "relief_2", "terrace", "terrains",
)  # fmt: skip
INDOOR_SCENES: tuple[str, ...] = (
    "delivery_area",
    "kicker",
    "office",
    "pipes",
    "relief",
    "relief_2",
    "terrains",
)
SUBSETS: dict[str, tuple[str, ...]] = {
    "all": TRAINING_SCENES,
    "facades": ("facade", "electro", "courtyard", "terrace"),
    "indoor": INDOOR_SCENES,
    "outdoor": tuple(s for s in TRAINING_SCENES if s not in INDOOR_SCENES),
}

UNDISTORTED_CALIB = "dslr_calibration_undistorted"
DISTORTED_CALIB = "dslr_calibration_jpg"
DEPTH_DIR = "ground_truth_depth"
MASK_DIR = "masks_for_images"
SCAN_DIR = "dslr_scan_eval"
SCAN_ALIGNMENT = "scan_alignment.mlp"

# Bilinear sampling of inverse depth is used only when the 2x2 neighbours agree within this ratio;
# otherwise they straddle a depth edge and the nearest sample is taken instead.
_EDGE_RATIO = 1.05
# ...or when their inverse depth is locally affine: second differences within this fraction of the
# first differences (a plane seen at a grazing angle passes, a step edge does not).
_PLANAR_TOL = 0.1

_DOWNLOAD_HINT = "vggtctl download eth3d --scenes {scene}"


@dataclass(frozen=True, eq=False)
class Eth3dFrame:
    """One undistorted DSLR image with its PINHOLE calibration.

    Attributes:
        name: the name as in images.txt, e.g. ``dslr_images_undistorted/DSC_0001.JPG``.
        image_path: the JPEG on disk.
        width: image width in pixels.
        height: image height in pixels.
        K: 3x3 float64 intrinsics, COLMAP pixel-corner convention (pixel centres at +0.5).
        extrinsic: 3x4 float64 world-to-camera ``[R|t]`` in metres (OpenCV axes, as VGGT's extrinsics).
        camera_id: COLMAP camera id (ETH3D starts at 0).
        image_id: COLMAP image id.
    """

    name: str
    image_path: Path
    width: int
    height: int
    K: np.ndarray
    extrinsic: np.ndarray
    camera_id: int = 0
    image_id: int = 0

    @property
    def stem(self) -> str:
        """The file name without folder, e.g. ``DSC_0001.JPG``."""
        return self.name.rsplit("/", 1)[-1]

    @property
    def distorted_name(self) -> str:
        """The matching name in the distorted calibration, e.g. ``dslr_images/DSC_0001.JPG``."""
        return f"dslr_images/{self.stem}"


class _GeometryLike(Protocol):
    orig_hw: tuple[int, int]
    out_hw: tuple[int, int]

    @property
    def scale_xy(self) -> tuple[float, float]: ...

    offset_xy: tuple[float, float]


@dataclass
class _DistortedCalibration:
    cameras: dict[int, Camera]
    by_stem: dict[str, Image]


@dataclass
class Eth3dScene:
    """An ETH3D scene folder. Build with :func:`open_scene`."""

    name: str
    root: Path
    frames: list[Eth3dFrame]
    cameras: dict[int, Camera] = field(repr=False)
    _map_cache: dict[tuple[Any, ...], tuple[np.ndarray, ...]] = field(default_factory=dict, repr=False)
    _grid_cache: dict[tuple[Any, ...], np.ndarray] = field(default_factory=dict, repr=False)

    # --- what is present -------------------------------------------------------------------------
    def has_depth(self) -> bool:
        """True when ground-truth depth (``<scene>_dslr_depth``) is present."""
        d = self.root / DEPTH_DIR / "dslr_images"
        return d.is_dir() and any(d.iterdir())

    def has_distorted_calibration(self) -> bool:
        """True when the THIN_PRISM_FISHEYE calibration (``<scene>_dslr_jpg``) is present."""
        return (self.root / DISTORTED_CALIB / "cameras.txt").is_file()

    def has_scans(self) -> bool:
        """True when the evaluation laser scans (``<scene>_dslr_scan_eval``) are present."""
        return (self.root / SCAN_DIR / SCAN_ALIGNMENT).is_file()

    def frame(self, name: str) -> Eth3dFrame:
        """The frame whose images.txt name or file name (``DSC_0001.JPG``) is ``name``."""
        for f in self.frames:
            if name in (f.name, f.stem):
                return f
        raise InputError(
            f"scene {self.name}: no image named {name!r}",
            f"images look like {self.frames[0].name!r}" if self.frames else "the scene has no images",
        )

    # --- images ------------------------------------------------------------------------------------
    def load_image(self, frame: Eth3dFrame) -> np.ndarray:
        """The undistorted image as ``(height, width, 3)`` uint8 RGB (no EXIF rotation: ETH3D's
        calibration matches the stored pixels)."""
        from PIL import Image as PILImage

        try:
            with PILImage.open(frame.image_path) as im:
                arr = np.asarray(im.convert("RGB"))
        except (OSError, ValueError) as e:
            raise InputError(
                f"cannot read image {frame.image_path}: {e}",
                _DOWNLOAD_HINT.format(scene=self.name) + " --kinds undistorted",
            ) from e
        if arr.shape[:2] != (frame.height, frame.width):
            raise InputError(
                f"{frame.image_path}: image is {arr.shape[1]}x{arr.shape[0]}, calibration says "
                f"{frame.width}x{frame.height}",
                "the scene folder mixes files from different downloads; re-download the scene",
            )
        return arr

    # --- masks and raw depth (distorted frame) ------------------------------------------------------
    @cached_property
    def _distorted(self) -> _DistortedCalibration:
        folder = self.root / DISTORTED_CALIB
        if not (folder / "cameras.txt").is_file():
            raise InputError(
                f"scene {self.name}: no distorted calibration {folder / 'cameras.txt'} (needed to map "
                "ground-truth depth into the undistorted images)",
                _DOWNLOAD_HINT.format(scene=self.name) + " --kinds jpg",
            )
        cams = read_cameras_text(folder / "cameras.txt")
        images = read_images_text(folder / "images.txt")
        return _DistortedCalibration(cams, {im.name.rsplit("/", 1)[-1]: im for im in images.values()})

    def distorted_camera(self, frame: Eth3dFrame) -> tuple[Camera, np.ndarray]:
        """The THIN_PRISM_FISHEYE camera and 3x4 world-to-camera extrinsic of a frame's original image."""
        calib = self._distorted
        im = calib.by_stem.get(frame.stem)
        path = self.root / DISTORTED_CALIB / "images.txt"
        if im is None:
            raise InputError(
                f"{path}: no entry for {frame.distorted_name}", "re-download the scene's jpg kind"
            )
        if im.camera_id not in calib.cameras:
            raise InputError(f"{path}: image {im.name} uses camera {im.camera_id}, not in cameras.txt")
        return calib.cameras[im.camera_id], im.extrinsic()

    def mask(self, frame: Eth3dFrame) -> np.ndarray:
        """The occlusion mask in the distorted image: uint8 0/1/2, all zeros when no PNG exists."""
        cam, _ = self.distorted_camera(frame)
        path = self.root / MASK_DIR / Path(frame.distorted_name).with_suffix(".png")
        if not path.is_file():
            return np.zeros((cam.height, cam.width), dtype=np.uint8)
        from PIL import Image as PILImage

        try:
            with PILImage.open(path) as im:
                m = np.asarray(im)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read mask {path}: {e}", "re-download the scene's occlusion kind") from e
        if m.ndim != 2 or m.shape != (cam.height, cam.width):
            raise InputError(f"{path}: mask has shape {m.shape}, expected ({cam.height}, {cam.width})")
        bad = ~np.isin(m, (0, 1, 2))
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise InputError(
                f"{path}: mask values must be 0, 1 or 2; pixel (row {i}, col {j}) is {int(m[i, j])}"
            )
        return m.astype(np.uint8, copy=False)

    def raw_depth(self, frame: Eth3dFrame) -> np.ndarray:
        """Ground-truth z-depth in the *distorted* image, float32, +inf invalid (the file as published)."""
        cam, _ = self.distorted_camera(frame)
        path = self.root / DEPTH_DIR / frame.distorted_name
        if not path.is_file():
            raise InputError(
                f"no ground-truth depth {path}", _DOWNLOAD_HINT.format(scene=self.name) + " --kinds depth"
            )
        need = cam.width * cam.height * 4
        size = path.stat().st_size
        if size != need:
            raise InputError(
                f"{path}: {size} bytes, a {cam.width}x{cam.height} float32 depth map has {need}",
                "the file is truncated or belongs to another calibration; re-download the scene's depth kind",
            )
        return np.fromfile(path, dtype="<f4").reshape(cam.height, cam.width).astype(np.float32, copy=False)

    # --- ground truth in the undistorted frame ------------------------------------------------------
    def _distorted_grid(self, cam_d: Camera) -> np.ndarray:
        """Normalised coordinates of the distorted camera's pixel centres (cached: ~10 s at 6048x4032)."""
        key = (cam_d.id, tuple(cam_d.params), cam_d.width, cam_d.height)
        hit = self._grid_cache.get(key)
        if hit is None:
            if len(self._grid_cache) >= 2:  # ~200 MB each at full resolution
                self._grid_cache.pop(next(iter(self._grid_cache)))
            hit = self._grid_cache[key] = camera_models.normalized_grid(cam_d)
        return hit

    def _undistorted_to_distorted(self, frame: Eth3dFrame) -> tuple[np.ndarray, ...]:
        """For each undistorted pixel centre: distorted pixel x, y, normalised distorted coordinates and
        the z_u / z_d ratio (float32 maps, the last one cached)."""
        cam_d, ext_d = self.distorted_camera(frame)
        cam_u = self.cameras[frame.camera_id]
        r_rel = ext_d[:, :3] @ frame.extrinsic[:, :3].T
        c_u = -frame.extrinsic[:, :3].T @ frame.extrinsic[:, 3]
        c_d = -ext_d[:, :3].T @ ext_d[:, 3]
        if np.linalg.norm(c_u - c_d) > 1e-3:
            log.warning("%s: undistorted and distorted camera centres differ by %.4f m", frame.name,
                        np.linalg.norm(c_u - c_d))  # fmt: skip
        key = (cam_u.id, tuple(cam_u.params), cam_u.width, cam_u.height, cam_d.id, tuple(cam_d.params),
               np.round(r_rel, 12).tobytes())  # fmt: skip
        hit = self._map_cache.get(key)
        if hit is not None:
            return hit
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
        self._map_cache.clear()  # one camera's map at full resolution is already ~900 MB
        self._map_cache[key] = (xs, ys, query, ratio)
        return xs, ys, query, ratio

    def gt_depth(self, frame: Eth3dFrame) -> np.ndarray:
        """Ground-truth z-depth (metres) in the UNDISTORTED image, ``(height, width)`` float32, 0 invalid.

        Invalid: no laser point, +inf/NaN/<=0 in the file, mask == 2, or outside the distorted image.
        Within a surface (see :func:`sample_depth`) inverse depth is interpolated barycentrically in
        normalised camera coordinates, which reproduces planes exactly through the lens distortion;
        elsewhere the sample of the distorted pixel that contains the point is used, so depth edges are
        never blended. Memory at full ETH3D resolution: ~1 GB of cached per-camera maps.
        """
        depth = self.raw_depth(frame)
        mask = self.mask(frame)
        xs, ys, query, ratio = self._undistorted_to_distorted(frame)
        grid = self._distorted_grid(self.distorted_camera(frame)[0])
        return sample_depth(depth, mask, xs, ys, ratio, grid=grid, query=query)

    # --- laser scans ---------------------------------------------------------------------------------
    def scan_alignment(self) -> list[tuple[Path, np.ndarray]]:
        """``(scan PLY path, 4x4 global_T_mesh)`` for every scan listed in ``scan_alignment.mlp``."""
        return read_scan_alignment(self.root / SCAN_DIR / SCAN_ALIGNMENT)

    def scan_points(self, max_points: int | None = None, seed: int = 0) -> np.ndarray:
        """All evaluation scan points in the calibration frame (alignment applied), ``[N, 3]`` float64.

        Args:
            max_points: keep a uniform random subset of this many points (seeded), or all when None.
            seed: seed for the subset.
        """
        from vggtctl.io.ply import read_ply

        if not self.has_scans():
            raise InputError(
                f"scene {self.name}: no {self.root / SCAN_DIR / SCAN_ALIGNMENT}",
                _DOWNLOAD_HINT.format(scene=self.name) + " --kinds scan_eval",
            )
        parts = []
        for path, T in self.scan_alignment():
            ply = read_ply(path)
            if "xyz" not in ply:
                raise InputError(f"{path}: PLY has no x, y, z vertex properties")
            xyz = ply["xyz"].astype(np.float64)
            parts.append(xyz @ T[:3, :3].T + T[:3, 3])
        pts = np.concatenate(parts, axis=0) if parts else np.zeros((0, 3))
        if max_points is not None and len(pts) > max_points:
            idx = np.sort(np.random.default_rng(seed).choice(len(pts), size=max_points, replace=False))
            pts = pts[idx]
        return pts


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


def resample_depth(depth: np.ndarray, geom: _GeometryLike) -> np.ndarray:
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


def read_scan_alignment(path: str | os.PathLike[str]) -> list[tuple[Path, np.ndarray]]:
    """Parse a MeshLab project (``scan_alignment.mlp``): ``(PLY path, 4x4 global_T_mesh)`` per mesh.

    Errors name the file and line.
    """
    from xml.parsers import expat

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}", "re-download the scene's scan_eval kind") from e
    meshes: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    in_matrix = False
    parser = expat.ParserCreate()

    def start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal current, in_matrix
        if tag == "MLMesh":
            current = {"attrs": attrs, "line": parser.CurrentLineNumber, "matrix": None, "mline": None}
            meshes.append(current)
        elif tag == "MLMatrix44" and current is not None:
            in_matrix = True
            current["matrix"], current["mline"] = "", parser.CurrentLineNumber

    def end(tag: str) -> None:
        nonlocal current, in_matrix
        if tag == "MLMatrix44":
            in_matrix = False
        elif tag == "MLMesh":
            current = None

    def chars(text: str) -> None:
        if in_matrix and current is not None:
            current["matrix"] += text

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(data, True)
    except expat.ExpatError as e:
        raise InputError(
            f"{path}:{e.lineno}: malformed XML ({expat.errors.messages[e.code]})",
            "re-download the scene's scan_eval kind",
        ) from None
    out = []
    for mesh in meshes:
        ln = mesh["line"]
        fname = mesh["attrs"].get("filename") or mesh["attrs"].get("label")
        if not fname:
            raise InputError(f"{path}:{ln}: MLMesh without a filename attribute")
        if mesh["matrix"] is None:
            raise InputError(f"{path}:{ln}: MLMesh {fname!r} has no MLMatrix44")
        mln = mesh["mline"]
        try:
            vals = [float(t) for t in mesh["matrix"].split()]
        except ValueError:
            raise InputError(f"{path}:{mln}: MLMatrix44 of {fname!r} holds a non-number") from None
        if len(vals) != 16:
            raise InputError(f"{path}:{mln}: MLMatrix44 of {fname!r} has {len(vals)} numbers, expected 16")
        T = np.array(vals, dtype=np.float64).reshape(4, 4)
        if not np.allclose(T[3], [0, 0, 0, 1], atol=1e-6):
            raise InputError(
                f"{path}:{mln}: MLMatrix44 of {fname!r} must end with the row 0 0 0 1, got {T[3].tolist()}"
            )
        out.append((path.parent / fname, T))
    if not out:
        raise InputError(f"{path}: no MLMesh entries", "re-download the scene's scan_eval kind")
    return out


def list_scenes(root: str | os.PathLike[str]) -> list[str]:
    """Names of the scene folders under ``root`` that hold an undistorted calibration (sorted)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"ETH3D folder {root} does not exist", "vggtctl download eth3d --subset facades")
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / UNDISTORTED_CALIB / "images.txt").is_file()
    )


def open_scene(scene_dir: str | os.PathLike[str]) -> Eth3dScene:
    """Read a scene's undistorted calibration; frames are sorted by name.

    Raises:
        InputError: the folder is not a scene, or a calibration file is malformed (file:line).
    """
    root = Path(scene_dir)
    calib = root / UNDISTORTED_CALIB
    if not (calib / "cameras.txt").is_file() or not (calib / "images.txt").is_file():
        raise InputError(
            f"{root} is not an ETH3D scene folder (no {UNDISTORTED_CALIB}/cameras.txt and images.txt)",
            _DOWNLOAD_HINT.format(scene=root.name) + f" --out {root.parent}",
        )
    cameras = read_cameras_text(calib / "cameras.txt")
    images = read_images_text(calib / "images.txt")
    frames = []
    for im in images.values():
        cam = cameras.get(im.camera_id)
        if cam is None:
            raise InputError(
                f"{calib / 'images.txt'}: image {im.name} uses camera {im.camera_id}, "
                f"cameras.txt has {sorted(cameras)}"
            )
        if cam.model not in ("PINHOLE", "SIMPLE_PINHOLE"):
            raise InputError(
                f"{calib / 'cameras.txt'}: camera {cam.id} is {cam.model}, undistorted images need PINHOLE"
            )
        frames.append(
            Eth3dFrame(
                name=im.name,
                image_path=root / "images" / im.name,
                width=cam.width,
                height=cam.height,
                K=cam.K(),
                extrinsic=im.extrinsic(),
                camera_id=cam.id,
                image_id=im.id,
            )
        )
    frames.sort(key=lambda f: f.name)
    return Eth3dScene(name=root.name, root=root, frames=frames, cameras=cameras)
