"""Alignments used before scoring scale-free predictions against metric ground truth.

* ``umeyama``: closed-form similarity (Sim(3)) or rigid (SE(3)) fit between corresponding 3-D points
  (Umeyama 1991), used for camera centres (ATE) and point maps (VGGT paper Tab. 3, Pi3/CUT3R).
* ``icp``: rigid point-to-point ICP refinement, the same estimator and stopping rule as Open3D's
  ``registration_icp`` with ``TransformationEstimationPointToPoint()`` (what Pi3/CUT3R use after Umeyama).
* ``median_scale`` / ``scene_median_scale`` / ``lstsq_scale_shift`` / ``align_depth``: the depth
  alignments of the monocular (per image), video (per scene) and affine-invariant protocols.

All functions are numpy-only and raise ``EvaluationError`` for inputs that cannot be aligned (too few
points, every point at one place, a constant prediction) instead of returning NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from vggtctl.errors import EvaluationError, UsageError

DEPTH_ALIGNMENTS = ("median", "scene-median", "lstsq", "none")

# Spread (relative to the largest coordinate) under which points count as one point: above float32
# round-off (predictions are stored as float32), far below any real camera baseline or scene extent.
_DEGENERATE_REL = 1e-6
_TINY = 1e-12
_APPLY_BLOCK = 16384  # rows per matrix product in Sim3.apply


@dataclass(frozen=True)
class Sim3:
    """``x ↦ scale · R x + t`` applied to row vectors ``[..., 3]``."""

    scale: float = 1.0
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transform points ``[..., 3]`` (any leading shape), returning float64."""
        p = np.asarray(points, dtype=np.float64)
        flat = p.reshape(-1, 3)
        out = np.empty_like(flat)
        rt = np.asarray(self.rotation, dtype=np.float64).T
        # Blocks of rows: one product of millions of rows wakes OpenBLAS's threads, which spin for ~20x
        # the CPU time of a single-threaded block; each row is computed by the same kernel either way.
        for s in range(0, len(flat), _APPLY_BLOCK):
            np.matmul(flat[s : s + _APPLY_BLOCK], rt, out=out[s : s + _APPLY_BLOCK])
        out *= self.scale
        out += self.translation
        return out.reshape(p.shape)

    def compose(self, inner: Sim3) -> Sim3:
        """The transform ``self(inner(x))``."""
        return Sim3(
            scale=self.scale * inner.scale,
            rotation=self.rotation @ inner.rotation,
            translation=self.scale * (self.rotation @ inner.translation) + self.translation,
        )

    def matrix(self) -> np.ndarray:
        """The 4x4 homogeneous matrix ``[[sR, t], [0, 1]]``."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m

    def to_dict(self) -> dict[str, object]:
        return {
            "scale": float(self.scale),
            "rotation": self.rotation.tolist(),
            "translation": self.translation.tolist(),
        }


def umeyama(
    src: np.ndarray, dst: np.ndarray, *, with_scale: bool = True, min_rank: int = 1, what: str = "points"
) -> Sim3:
    """Least-squares similarity (or rigid) transform mapping ``src`` onto ``dst``.

    Minimises ``sum ||dst_i - (s R src_i + t)||²`` in closed form (Umeyama 1991, with the reflection fix).

    Args:
        src: ``[N, 3]`` points to move (e.g. predicted camera centres or points).
        dst: ``[N, 3]`` corresponding target points (ground truth).
        with_scale: Fit the scale too (Sim(3)); otherwise scale is 1 (SE(3)).
        min_rank: Required rank of the centred ``src`` (1: not all at one point, 2: not all on one line,
            so that the rotation is determined).
        what: Words naming the points, for the error message.

    Returns:
        The fitted ``Sim3``.

    Raises:
        EvaluationError: Fewer than 2 finite correspondences, or the points are degenerate.
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 3)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 3)
    if src.shape != dst.shape:
        raise EvaluationError(f"cannot align {what}: {len(src)} source vs {len(dst)} target points")
    finite = np.isfinite(src).all(1) & np.isfinite(dst).all(1)
    src, dst = src[finite], dst[finite]
    n = len(src)
    if n < 2:
        raise EvaluationError(
            f"cannot align {what}: {n} finite correspondence(s), need at least 2",
            "evaluate more frames (--frames) or check that the ground truth has valid depth",
        )
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    # singular values of the centred points from their 3x3 scatter: O(N), unlike an SVD of [N, 3]
    sv_src = np.sqrt(np.clip(np.linalg.eigvalsh(xs.T @ xs)[::-1], 0, None))
    sv_dst = np.sqrt(np.clip(np.linalg.eigvalsh(xd.T @ xd)[::-1], 0, None))
    if sv_src[0] <= (_DEGENERATE_REL * float(np.abs(src).max()) + _TINY) * np.sqrt(n):
        raise EvaluationError(
            f"cannot align {what}: all {n} predicted positions are at one point (spread {sv_src[0] / np.sqrt(n):.3g})",
            "the prediction collapsed; check the model and its weights (vggtctl infer on one scene)",
        )
    if sv_dst[0] <= (_DEGENERATE_REL * float(np.abs(dst).max()) + _TINY) * np.sqrt(n):
        raise EvaluationError(
            f"cannot align {what}: all {n} ground-truth positions are at one point",
            "pick frames with different viewpoints (--frames/--stride) or check the calibration",
        )
    if min_rank >= 2 and (len(sv_src) < 2 or sv_src[1] <= 1e-6 * sv_src[0]):
        raise EvaluationError(
            f"cannot align {what}: all {n} predicted positions lie on one line, the rotation is undetermined",
            "align on points instead (--pc-align points) or use more frames",
        )
    cov = xd.T @ xs / n
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2] = -1.0
    rot = u @ np.diag(sign) @ vt
    var_src = float((xs**2).sum() / n)
    scale = float((d * sign).sum() / var_src) if with_scale else 1.0
    trans = mu_d - scale * (rot @ mu_s)
    return Sim3(scale=scale, rotation=rot, translation=trans)


@dataclass(frozen=True)
class IcpResult:
    """Outcome of ``icp``: the refinement (to compose after the initial alignment) and its fit."""

    transform: Sim3
    iterations: int
    fitness: float  # fraction of source points with a target within max_distance
    inlier_rmse: float  # RMSE of those correspondences (target units)


def icp(
    src: np.ndarray,
    dst: np.ndarray,
    *,
    max_distance: float,
    max_iterations: int = 30,
    relative_fitness: float = 1e-6,
    relative_rmse: float = 1e-6,
    dst_tree: cKDTree | None = None,
    with_scale: bool = False,
) -> IcpResult:
    """Rigid (or, ``with_scale``, similarity) point-to-point ICP of ``src`` onto ``dst`` (Open3D's
    estimator and convergence test).

    Like Open3D's ``registration_icp``: match every (moved) source point to its nearest target, keep pairs
    closer than ``max_distance``; stop when fitness and inlier RMSE change by less than the tolerances
    (Open3D defaults: 30 iterations, 1e-6, 1e-6); otherwise re-solve the rigid transform on the pairs.

    Args:
        src: ``[N, 3]`` points already roughly aligned (e.g. after ``umeyama``).
        dst: ``[M, 3]`` target cloud.
        max_distance: Correspondence threshold in target units (Pi3/CUT3R use 0.1 m on ETH3D).
        max_iterations: Iteration cap.
        relative_fitness: Convergence tolerance on the fitness change.
        relative_rmse: Convergence tolerance on the RMSE change.
        dst_tree: A prebuilt ``cKDTree`` of ``dst`` to reuse.
        with_scale: Also fit a scale at each step (Umeyama Sim(3); Open3D's ``with_scaling``).

    Returns:
        ``IcpResult`` whose ``transform`` maps the given ``src`` to its refined position (identity when
        fewer than 3 pairs are within ``max_distance``).
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 3)
    tree = dst_tree if dst_tree is not None else cKDTree(np.asarray(dst, dtype=np.float64).reshape(-1, 3))
    total = Sim3()
    moved = src
    dist, idx = tree.query(moved, k=1, distance_upper_bound=max_distance, workers=-1)
    fitness, rmse = _icp_fit(dist)
    it = 0
    for it in range(1, max_iterations + 1):  # noqa: B007 - the count is reported
        ok = np.isfinite(dist)
        if ok.sum() < 3:
            break
        step = umeyama(moved[ok], tree.data[idx[ok]], with_scale=with_scale, what="ICP correspondences")
        total = step.compose(total)
        moved = total.apply(src)
        dist, idx = tree.query(moved, k=1, distance_upper_bound=max_distance, workers=-1)
        new_fitness, new_rmse = _icp_fit(dist)
        converged = abs(new_fitness - fitness) < relative_fitness and abs(new_rmse - rmse) < relative_rmse
        fitness, rmse = new_fitness, new_rmse
        if converged:
            break
    return IcpResult(transform=total, iterations=it, fitness=fitness, inlier_rmse=rmse)


def _icp_fit(dist: np.ndarray) -> tuple[float, float]:
    ok = np.isfinite(dist)
    if not ok.any():
        return 0.0, 0.0
    return float(ok.mean()), float(np.sqrt(np.mean(dist[ok] ** 2)))


# ---------------------------------------------------------------------------------------------------
# Depth alignment


def median_scale(pred: np.ndarray, gt: np.ndarray) -> float:
    """Scale ``s = median(gt) / median(pred)`` over corresponding valid values (1-D arrays)."""
    pred = np.asarray(pred, dtype=np.float64).ravel()
    gt = np.asarray(gt, dtype=np.float64).ravel()
    if pred.size == 0:
        raise EvaluationError(
            "cannot scale depth: no valid pixels", "check the ground-truth depth of the scene"
        )
    mp = float(np.median(pred))
    if not np.isfinite(mp) or mp <= 0:
        raise EvaluationError(
            f"cannot scale depth: the median predicted depth over {pred.size} valid pixels is {mp:.6g}",
            "the prediction is not a positive depth map; check the model (vggtctl infer)",
        )
    return float(np.median(gt)) / mp


def scene_median_scale(preds: list[np.ndarray], gts: list[np.ndarray]) -> float:
    """One scale for a whole scene: ``median(all gt) / median(all pred)`` over every frame's valid pixels."""
    return median_scale(
        np.concatenate([np.ravel(p) for p in preds]), np.concatenate([np.ravel(g) for g in gts])
    )


def lstsq_scale_shift(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Least-squares ``(s, t)`` minimising ``sum (s·pred + t − gt)²`` over corresponding valid values."""
    pred = np.asarray(pred, dtype=np.float64).ravel()
    gt = np.asarray(gt, dtype=np.float64).ravel()
    if pred.size < 2:
        raise EvaluationError(
            f"cannot fit depth scale and shift: {pred.size} valid pixel(s), need at least 2",
            "use --depth-align median, or evaluate frames with more ground truth",
        )
    mp = pred.mean()
    var = float(np.mean((pred - mp) ** 2))
    if var <= (_DEGENERATE_REL * abs(mp) + _TINY) ** 2:
        raise EvaluationError(
            f"cannot fit depth scale and shift: the prediction is constant ({mp:.6g}) over {pred.size} valid pixels",
            "use --depth-align median",
        )
    s = float(np.mean((pred - mp) * (gt - gt.mean())) / var)
    return s, float(gt.mean() - s * mp)


def align_depth(
    pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, method: str
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Align predicted depth maps ``[S, H, W]`` to ground truth with one of ``DEPTH_ALIGNMENTS``.

    Args:
        pred: Predicted depth ``[S, H, W]``.
        gt: Ground-truth depth ``[S, H, W]``.
        mask: Valid ground-truth pixels ``[S, H, W]`` (the only pixels the fit looks at).
        method: ``median`` (per image), ``scene-median`` (one scale per scene), ``lstsq`` (per-image
            scale and shift) or ``none``.

    Returns:
        The aligned depth ``[S, H, W]`` (float64) and the ``(scale, shift)`` used for each frame. Frames
        without valid pixels keep scale 1, shift 0 (they are not scored).
    """
    pred = np.asarray(pred, dtype=np.float64)
    s_count = pred.shape[0]
    params: list[tuple[float, float]] = [(1.0, 0.0)] * s_count
    if method == "none":
        pass
    elif method == "scene-median":
        scale = scene_median_scale(
            [pred[i][mask[i]] for i in range(s_count)], [gt[i][mask[i]] for i in range(s_count)]
        )
        params = [(scale, 0.0)] * s_count
    elif method in ("median", "lstsq"):
        for i in range(s_count):
            if not mask[i].any():
                continue
            if method == "median":
                params[i] = (median_scale(pred[i][mask[i]], gt[i][mask[i]]), 0.0)
            else:
                params[i] = lstsq_scale_shift(pred[i][mask[i]], gt[i][mask[i]])
    else:
        raise UsageError(f"unknown depth alignment {method!r}", f"use one of: {', '.join(DEPTH_ALIGNMENTS)}")
    scales = np.array([p[0] for p in params])[:, None, None]
    shifts = np.array([p[1] for p in params])[:, None, None]
    return pred * scales + shifts, params
