"""A synthetic bundle-adjustment problem with exact cameras: for tests and ``benchmarks/bench_bundle_adjust.py``.

``views`` PINHOLE cameras on a ring around a cloud of points, all looking at its centre; every point is
observed exactly (its true projection) in every camera that sees it. :func:`perturbed` returns the same
scene with noisy poses and points, the starting point a feed-forward prediction gives a bundle adjuster.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np

from vggtctl.io.colmap_export import write_prediction_model
from vggtctl.services.colmap_tracks import project


@dataclass(frozen=True)
class Scene:
    """Cameras (world-to-camera ``[S,3,4]``, intrinsics ``[S,3,3]``), points ``[N,3]`` and observations."""

    extrinsic: np.ndarray
    intrinsic: np.ndarray
    points: np.ndarray
    obs_point: np.ndarray
    obs_frame: np.ndarray
    obs_xy: np.ndarray
    size_hw: tuple[int, int] = (480, 640)

    def write(self, folder: str | os.PathLike[str], fmt: str = "bin") -> None:
        """Write the scene as a COLMAP model (image ``i + 1`` is ``view_i.png``)."""
        s = len(self.extrinsic)
        write_prediction_model(
            folder,
            self.extrinsic,
            self.intrinsic,
            [self.size_hw] * s,
            [f"view_{i:03d}.png" for i in range(s)],
            self.points,
            np.full((len(self.points), 3), 128, dtype=np.uint8),
            fmt,
            (self.obs_point, self.obs_frame, self.obs_xy),
        )


def _look_at(centre: np.ndarray, target: np.ndarray) -> np.ndarray:
    z = (target - centre) / np.linalg.norm(target - centre)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(z, x), z])
    return np.concatenate([R, (-R @ centre)[:, None]], axis=1)


def ring_scene(views: int = 24, points: int = 500, seed: int = 0, focal: float = 500.0) -> Scene:
    """Exact scene: ``views`` cameras on a ring of radius 4 around ``points`` points in a unit cube."""
    rng = np.random.default_rng(seed)
    h, w = 480, 640
    xyz = rng.uniform(-1.0, 1.0, (points, 3))
    ext = []
    for i in range(views):
        a = 2 * np.pi * i / views
        centre = np.array([4 * np.cos(a), 0.5 * np.sin(3 * a), 4 * np.sin(a)])
        ext.append(_look_at(centre, np.zeros(3)))
    extrinsic = np.stack(ext)
    K = np.array([[focal, 0, w / 2], [0, focal, h / 2], [0, 0, 1.0]])
    intrinsic = np.repeat(K[None], views, axis=0)
    pts, frames, xys = [], [], []
    for j in range(views):
        xy, z = project(xyz, extrinsic[j], K)
        seen = (z > 0) & (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
        pts.append(np.flatnonzero(seen))
        frames.append(np.full(int(seen.sum()), j))
        xys.append(xy[seen])
    return Scene(extrinsic, intrinsic, xyz, np.concatenate(pts), np.concatenate(frames), np.concatenate(xys))


def _rotation(rotvec: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(rotvec))
    if angle == 0:
        return np.eye(3)
    k = rotvec / angle
    Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * Kx + (1 - np.cos(angle)) * Kx @ Kx


def perturbed(
    scene: Scene, rot_deg: float = 1.0, trans: float = 0.05, point_noise: float = 0.02, seed: int = 1
) -> Scene:
    """The scene with every camera rotated by ~``rot_deg`` and shifted by ~``trans``, points jittered.

    The observations stay exact: they are the measurements.
    """
    rng = np.random.default_rng(seed)
    ext = scene.extrinsic.copy()
    for j in range(len(ext)):
        ext[j, :, :3] = _rotation(rng.normal(0, np.deg2rad(rot_deg), 3)) @ ext[j, :, :3]
        ext[j, :, 3] += rng.normal(0, trans, 3)
    pts = scene.points + rng.normal(0, point_noise, scene.points.shape)
    return replace(scene, extrinsic=ext, points=pts)


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity ``(s, R, t)`` minimising ``|s R src + t - dst|`` (Umeyama 1991), ``[N,3]`` each."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    U, D, Vt = np.linalg.svd(b.T @ a / len(src))
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1
    R = U @ S @ Vt
    s = float(np.trace(np.diag(D) @ S) / a.var(0).sum())
    return s, R, mu_d - s * R @ mu_s


def pose_errors(extrinsic: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-camera rotation error (degrees) and centre error (scene units) after the best similarity.

    The gauge of a bundle adjustment (position, orientation and scale of the world) is arbitrary, so the
    estimate is first mapped onto the truth by the similarity that best aligns the camera centres.
    """
    centres = np.stack([-E[:, :3].T @ E[:, 3] for E in extrinsic])
    true_centres = np.stack([-E[:, :3].T @ E[:, 3] for E in truth])
    s, R, t = umeyama(centres, true_centres)
    centre_err = np.linalg.norm(s * centres @ R.T + t - true_centres, axis=1)
    rot_err = []
    for E, T in zip(extrinsic, truth, strict=True):
        # World-to-camera rotation in the aligned world: R_cam R^T.
        D = (E[:, :3] @ R.T) @ T[:, :3].T
        rot_err.append(np.degrees(np.arccos(np.clip((np.trace(D) - 1) / 2, -1.0, 1.0))))
    return np.array(rot_err), centre_err
