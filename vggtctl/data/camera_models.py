"""COLMAP camera models used by ETH3D: PINHOLE (undistorted images) and THIN_PRISM_FISHEYE (originals).

Conventions follow COLMAP exactly: pixel (0, 0) is the top-left *corner* of the top-left pixel, so the
centre of pixel (row i, column j) is at (j + 0.5, i + 0.5); "normalised" coordinates are (X/Z, Y/Z) of a
camera-frame point. THIN_PRISM_FISHEYE params are ``fx fy cx cy k1 k2 p1 p2 k3 k4 sx1 sy1``: first the
equidistant fisheye warp ``u = a * atan(r) / r`` of the normalised point (a, b), then radial, tangential
and thin-prism distortion of (u, v), then the affine map to pixels (COLMAP ``ThinPrismFisheyeCameraModel``).
The inverse solves the distortion with Newton's method and an analytic Jacobian, to ~1e-12.
"""

from __future__ import annotations

import numpy as np

from vggtctl.errors import InputError
from vggtctl.io.colmap import Camera

SUPPORTED_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "THIN_PRISM_FISHEYE")

_EPS = 1e-12


def _split_params(camera: Camera) -> tuple[float, float, float, float, np.ndarray]:
    p = np.asarray(camera.params, dtype=np.float64)
    if camera.model == "SIMPLE_PINHOLE":
        return p[0], p[0], p[1], p[2], np.zeros(0)
    if camera.model == "PINHOLE":
        return p[0], p[1], p[2], p[3], np.zeros(0)
    if camera.model == "THIN_PRISM_FISHEYE":
        return p[0], p[1], p[2], p[3], p[4:12]
    raise InputError(
        f"camera {camera.id}: model {camera.model} is not supported here",
        f"supported models: {', '.join(SUPPORTED_MODELS)} (ETH3D uses PINHOLE and THIN_PRISM_FISHEYE)",
    )


def thin_prism_distort(extra: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Apply the radial + tangential + thin-prism distortion of COLMAP to fisheye-warped points.

    Args:
        extra: ``k1 k2 p1 p2 k3 k4 sx1 sy1``.
        uv: ``[..., 2]`` fisheye-warped normalised coordinates.

    Returns:
        ``[..., 2]`` distorted normalised coordinates ``uv + duv``.
    """
    k1, k2, p1, p2, k3, k4, sx1, sy1 = (float(x) for x in extra)
    u, v = uv[..., 0], uv[..., 1]
    u2, v2, uv_ = u * u, v * v, u * v
    r2 = u2 + v2
    radial = r2 * (k1 + r2 * (k2 + r2 * (k3 + r2 * k4)))
    du = u * radial + 2 * p1 * uv_ + p2 * (r2 + 2 * u2) + sx1 * r2
    dv = v * radial + 2 * p2 * uv_ + p1 * (r2 + 2 * v2) + sy1 * r2
    return np.stack([u + du, v + dv], axis=-1)


def _distort_jacobian(extra: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, ...]:
    k1, k2, p1, p2, k3, k4, sx1, sy1 = (float(x) for x in extra)
    r2 = u * u + v * v
    radial = r2 * (k1 + r2 * (k2 + r2 * (k3 + r2 * k4)))
    dradial = k1 + r2 * (2 * k2 + r2 * (3 * k3 + r2 * 4 * k4))  # d radial / d r2
    j00 = 1 + radial + 2 * u * u * dradial + 2 * p1 * v + 6 * p2 * u + 2 * sx1 * u
    j01 = 2 * u * v * dradial + 2 * p1 * u + 2 * p2 * v + 2 * sx1 * v
    j10 = 2 * u * v * dradial + 2 * p2 * v + 2 * p1 * u + 2 * sy1 * u
    j11 = 1 + radial + 2 * v * v * dradial + 2 * p2 * u + 6 * p1 * v + 2 * sy1 * v
    return j00, j01, j10, j11


def thin_prism_undistort(
    extra: np.ndarray, xy: np.ndarray, iters: int = 30, tol: float = 1e-14, init: np.ndarray | None = None
) -> np.ndarray:
    """Invert :func:`thin_prism_distort` with Newton's method (analytic Jacobian).

    Args:
        extra: ``k1 k2 p1 p2 k3 k4 sx1 sy1``.
        xy: ``[..., 2]`` distorted normalised coordinates.
        iters: maximum Newton iterations.
        tol: stop when every update is below this.
        init: optional starting guess for ``uv`` (default ``xy``); a close guess needs 1-2 iterations.

    Returns:
        ``[..., 2]`` fisheye-warped coordinates ``uv`` with ``distort(uv) == xy``.
    """
    xy = np.asarray(xy, dtype=np.float64)
    uv = xy.copy() if init is None else np.array(init, dtype=np.float64)
    for _ in range(iters):
        res = thin_prism_distort(extra, uv) - xy
        j00, j01, j10, j11 = _distort_jacobian(extra, uv[..., 0], uv[..., 1])
        det = j00 * j11 - j01 * j10
        det = np.where(np.abs(det) < _EPS, _EPS, det)
        step_u = (j11 * res[..., 0] - j01 * res[..., 1]) / det
        step_v = (-j10 * res[..., 0] + j00 * res[..., 1]) / det
        uv[..., 0] -= step_u
        uv[..., 1] -= step_v
        if max(float(np.max(np.abs(step_u), initial=0.0)), float(np.max(np.abs(step_v), initial=0.0))) < tol:
            break
    return uv


def fisheye_warp(ab: np.ndarray) -> np.ndarray:
    """Equidistant fisheye warp of normalised coordinates: ``ab * atan(r) / r``."""
    r = np.linalg.norm(ab, axis=-1, keepdims=True)
    safe = np.where(r > _EPS, r, 1.0)
    return np.where(r > _EPS, ab * np.arctan(safe) / safe, ab)


def fisheye_unwarp(uv: np.ndarray) -> np.ndarray:
    """Inverse of :func:`fisheye_warp`: ``uv * tan(theta) / theta`` with ``theta = |uv|`` (< pi/2)."""
    theta = np.linalg.norm(uv, axis=-1, keepdims=True)
    safe = np.where(theta > _EPS, theta, 1.0)
    return np.where(theta > _EPS, uv * np.tan(safe) / safe, uv)


def img_from_cam(camera: Camera, points: np.ndarray) -> np.ndarray:
    """Project camera-frame points (``[..., 3]``) or normalised coordinates (``[..., 2]``) to pixels.

    Points behind the camera (Z <= 0) give NaN pixels.
    """
    fx, fy, cx, cy, extra = _split_params(camera)
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape[-1] == 3:
        z = pts[..., 2:3]
        ab = np.where(z > _EPS, pts[..., :2] / np.where(z > _EPS, z, 1.0), np.nan)
    else:
        ab = pts
    if camera.model == "THIN_PRISM_FISHEYE":
        ab = thin_prism_distort(extra, fisheye_warp(ab))
    return np.stack([fx * ab[..., 0] + cx, fy * ab[..., 1] + cy], axis=-1)


def cam_from_img(camera: Camera, pixels: np.ndarray, init: np.ndarray | None = None) -> np.ndarray:
    """Normalised coordinates (X/Z, Y/Z) of pixel positions ``[..., 2]`` (COLMAP pixel-corner convention).

    Args:
        camera: a supported COLMAP camera.
        pixels: ``[..., 2]`` pixel positions.
        init: optional close guess of the result (speeds up the THIN_PRISM_FISHEYE inversion).
    """
    fx, fy, cx, cy, extra = _split_params(camera)
    pix = np.asarray(pixels, dtype=np.float64)
    xy = np.stack([(pix[..., 0] - cx) / fx, (pix[..., 1] - cy) / fy], axis=-1)
    if camera.model == "THIN_PRISM_FISHEYE":
        guess = None if init is None else fisheye_warp(np.asarray(init, dtype=np.float64))
        xy = fisheye_unwarp(thin_prism_undistort(extra, xy, init=guess))
    return xy


def normalized_grid(camera: Camera, stride: int = 16, dtype: type = np.float32) -> np.ndarray:
    """Normalised coordinates of every pixel centre, ``(height, width, 2)``.

    For distorted cameras the model is inverted exactly on a coarse lattice, interpolated bilinearly as
    the starting guess, then polished by Newton's method row block by row block (full ETH3D resolution
    costs ~10 s instead of ~30 s for a cold start everywhere).
    """
    h, w = camera.height, camera.width
    out = np.empty((h, w, 2), dtype=dtype)
    if camera.model != "THIN_PRISM_FISHEYE":
        out[:] = cam_from_img(camera, pixel_centers(w, h))
        return out
    cols = np.unique(np.r_[np.arange(0, w, stride), w - 1])
    rows = np.unique(np.r_[np.arange(0, h, stride), h - 1])
    gx, gy = np.meshgrid(cols + 0.5, rows + 0.5)
    coarse = cam_from_img(camera, np.stack([gx, gy], axis=-1))
    block = max(1, 1_000_000 // w)
    xs = np.arange(w)
    ci = np.clip(np.searchsorted(cols, xs, side="right") - 1, 0, len(cols) - 2)
    tx = ((xs - cols[ci]) / (cols[ci + 1] - cols[ci]))[None, :, None]
    for r0 in range(0, h, block):
        ys = np.arange(r0, min(h, r0 + block))
        ri = np.clip(np.searchsorted(rows, ys, side="right") - 1, 0, len(rows) - 2)
        ty = ((ys - rows[ri]) / (rows[ri + 1] - rows[ri]))[:, None, None]
        top = coarse[ri][:, ci] * (1 - tx) + coarse[ri][:, ci + 1] * tx
        bot = coarse[ri + 1][:, ci] * (1 - tx) + coarse[ri + 1][:, ci + 1] * tx
        guess = top * (1 - ty) + bot * ty
        grid = pixel_centers(w, len(ys))
        grid[..., 1] += r0
        out[r0 : r0 + len(ys)] = cam_from_img(camera, grid, init=guess)
    return out


def pixel_centers(width: int, height: int) -> np.ndarray:
    """``[height, width, 2]`` pixel-centre coordinates ``(j + 0.5, i + 0.5)``."""
    xs = np.arange(width, dtype=np.float64) + 0.5
    ys = np.arange(height, dtype=np.float64) + 0.5
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx, gy], axis=-1)


def pinhole_camera(
    camera_id: int, width: int, height: int, fx: float, fy: float, cx: float, cy: float
) -> Camera:
    """A COLMAP PINHOLE camera."""
    return Camera(camera_id, "PINHOLE", int(width), int(height), np.array([fx, fy, cx, cy], dtype=np.float64))
