"""Robust Sim(3) between corresponding 3-D points: the step that glues overlapping inference chunks.

A chunk of frames comes out of VGGT in its own world frame (its first frame's camera) and its own scale.
Its overlap frames were also predicted by the reconstruction built so far, pixel for pixel, so each
confident pixel gives a correspondence ``chunk point -> reconstruction point``. Some of those are wrong
(depth edges, sky, low-texture areas where the two passes disagree), so the fit is

1. RANSAC over minimal 3-point samples (closed-form Umeyama on each), scored by inliers within a
   threshold relative to the scene's extent, seeded for repeatability;
2. IRLS with Tukey's biweight on the residuals, starting from the RANSAC model: inliers keep weight
   ~1, gross outliers get weight 0, so a noise-free inlier set is fitted exactly.

Everything is numpy; :class:`vggtctl.services.metrics.align.Sim3` is the transform type.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vggtctl.errors import InputError
from vggtctl.services.metrics.align import Sim3

# Residuals are measured relative to the target points' extent (median distance to their median), so
# thresholds do not depend on the scene's unknown scale.
DEFAULT_INLIER_REL = 0.05
_TUKEY_C = 4.685  # 95 % efficiency at Gaussian noise


@dataclass(frozen=True)
class Sim3Fit:
    """A robust fit and how well it explains the correspondences.

    Attributes:
        transform: ``x -> s R x + t`` mapping source onto target.
        points: Correspondences used (finite ones).
        inliers: Correspondences within the inlier threshold after the final fit.
        residual_rel: Median residual over ALL correspondences divided by the target extent (how much
            the two point sets disagree once aligned; robust to up to half of them being outliers).
        rmse_rel: RMS residual of the inliers divided by the target extent.
        extent: The target extent (median distance to the median point), in target units.
    """

    transform: Sim3
    points: int
    inliers: int
    residual_rel: float
    rmse_rel: float
    extent: float

    @property
    def inlier_ratio(self) -> float:
        return self.inliers / self.points if self.points else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            **self.transform.to_dict(),
            "points": self.points,
            "inliers": self.inliers,
            "inlier_ratio": round(self.inlier_ratio, 4),
            "residual_rel": float(self.residual_rel),
            "rmse_rel": float(self.rmse_rel),
            "extent": float(self.extent),
        }


def weighted_umeyama(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> Sim3:
    """Closed-form weighted least-squares similarity ``dst ≈ s R src + t`` (Umeyama 1991, reflection fix).

    Args:
        src: ``[N, 3]`` source points.
        dst: ``[N, 3]`` target points.
        weights: ``[N]`` non-negative weights (all ones when None).

    Raises:
        InputError: Fewer than 3 weighted points or a source spread of zero.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    total = float(w.sum())
    if len(src) < 3 or total <= 0 or np.count_nonzero(w) < 3:
        raise InputError(
            f"cannot fit a Sim(3): {np.count_nonzero(w)} weighted correspondence(s), need at least 3",
            "use a larger overlap between chunks (--overlap) or a lower confidence threshold",
        )
    wn = w / total
    mu_s = wn @ src
    mu_d = wn @ dst
    xs, xd = src - mu_s, dst - mu_d
    var_s = float(wn @ (xs**2).sum(1))
    if var_s <= 1e-300:
        raise InputError(
            "cannot fit a Sim(3): every source point is at one place",
            "the chunk's prediction collapsed; check the model and the overlap frames",
        )
    cov = (xd * wn[:, None]).T @ xs
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2] = -1.0
    rot = u @ np.diag(sign) @ vt
    scale = float((d * sign).sum() / var_s)
    return Sim3(scale=scale, rotation=rot, translation=mu_d - scale * (rot @ mu_s))


def _extent(points: np.ndarray) -> float:
    return float(np.median(np.linalg.norm(points - np.median(points, axis=0), axis=1)))


def _residuals(t: Sim3, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    return np.linalg.norm(t.apply(src) - dst, axis=1)


def _ransac(
    src: np.ndarray, dst: np.ndarray, thr: float, iterations: int, rng: np.random.Generator
) -> tuple[Sim3, np.ndarray]:
    n = len(src)
    best: Sim3 | None = None
    best_in = np.zeros(n, dtype=bool)
    for _ in range(iterations):
        idx = rng.choice(n, size=3, replace=False)
        a = src[idx]
        # Skip near-collinear samples: their rotation about the line is undetermined.
        if np.linalg.norm(np.cross(a[1] - a[0], a[2] - a[0])) <= 1e-12 * (np.abs(a).max() ** 2 + 1e-300):
            continue
        try:
            cand = weighted_umeyama(a, dst[idx])
        except InputError:
            continue
        if not np.isfinite(cand.scale) or cand.scale <= 0:
            continue
        inl = _residuals(cand, src, dst) < thr
        if inl.sum() > best_in.sum():
            best, best_in = cand, inl
            if inl.all():
                break
    if best is None or best_in.sum() < 3:
        best, best_in = weighted_umeyama(src, dst), np.ones(n, dtype=bool)
    return best, best_in


def robust_sim3(
    src: np.ndarray,
    dst: np.ndarray,
    *,
    inlier_rel: float = DEFAULT_INLIER_REL,
    ransac_iterations: int = 200,
    irls_iterations: int = 20,
    max_points: int = 20_000,
    seed: int = 0,
) -> Sim3Fit:
    """Fit ``dst ≈ s R src + t`` robustly: RANSAC initialisation, then Tukey IRLS.

    Args:
        src: ``[N, 3]`` points in the frame to move (a chunk's world frame).
        dst: ``[N, 3]`` the same points in the target frame (the reconstruction so far).
        inlier_rel: Inlier threshold as a fraction of the target extent.
        ransac_iterations: Minimal-sample trials.
        irls_iterations: Reweighting rounds (stops early when the weights settle).
        max_points: Seeded subset size above which correspondences are subsampled (speed).
        seed: RNG seed for the subset and the RANSAC samples.

    Returns:
        The fit and its residuals over all (finite) correspondences.

    Raises:
        InputError: Shapes differ, fewer than 3 finite correspondences, or degenerate points.
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 3)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 3)
    if src.shape != dst.shape:
        raise InputError(f"cannot fit a Sim(3): {len(src)} source vs {len(dst)} target points")
    finite = np.isfinite(src).all(1) & np.isfinite(dst).all(1)
    src_all, dst_all = src[finite], dst[finite]
    if len(src_all) < 3:
        raise InputError(
            f"cannot fit a Sim(3): {len(src_all)} finite correspondence(s), need at least 3",
            "use a larger overlap between chunks (--overlap) or a lower confidence threshold",
        )
    rng = np.random.default_rng(seed)
    if len(src_all) > max_points:
        pick = rng.choice(len(src_all), size=max_points, replace=False)
        src, dst = src_all[pick], dst_all[pick]
    else:
        src, dst = src_all, dst_all
    extent = _extent(dst)
    if extent <= 0:
        raise InputError(
            "cannot fit a Sim(3): every target point is at one place",
            "the overlap frames show no structure; use a larger overlap (--overlap)",
        )
    thr = inlier_rel * extent
    t, inl = _ransac(src, dst, thr, ransac_iterations, rng)
    # IRLS: Tukey scale from the inliers' robust spread, never below a tiny floor (exact data).
    w = inl.astype(np.float64)
    for _ in range(irls_iterations):
        t = weighted_umeyama(src, dst, w)
        r = _residuals(t, src, dst)
        sigma = max(1.4826 * float(np.median(r[r < thr])) if (r < thr).any() else thr, 1e-9 * extent)
        c = min(_TUKEY_C * sigma, thr)
        u = r / c
        new_w = np.where(u < 1, (1 - u**2) ** 2, 0.0)
        if np.count_nonzero(new_w) < 3:
            break
        if np.allclose(new_w, w, atol=1e-6):
            w = new_w
            break
        w = new_w
    r_all = _residuals(t, src_all, dst_all)
    ext_all = _extent(dst_all)
    inliers = r_all < inlier_rel * ext_all
    ri = r_all[inliers] if inliers.any() else r_all
    return Sim3Fit(
        transform=t,
        points=int(len(src_all)),
        inliers=int(inliers.sum()),
        residual_rel=float(np.median(r_all) / ext_all),
        rmse_rel=float(np.sqrt(np.mean(ri**2)) / ext_all),
        extent=ext_all,
    )
