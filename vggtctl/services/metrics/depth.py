"""Depth metrics on valid ground-truth pixels (definitions as in Eigen et al. / CUT3R / RobustMVD).

With ``d`` the aligned prediction and ``d*`` the ground truth over the N valid pixels:
AbsRel = mean(|d − d*| / d*), SqRel = mean((d − d*)² / d*), RMSE = sqrt(mean((d − d*)²)),
RMSE-log = sqrt(mean((log d − log d*)²)) with d clamped to ≥ 1e-5, MAE = mean(|d − d*|),
δ_k = fraction with max(d/d*, d*/d) < 1.25^k (k = 1, 2, 3), inlier_1.03 = the same ratio < 1.03
(RobustMVD/DUSt3R "τ"). A prediction ≤ 0 (or non-finite) on a valid pixel is an outlier for the
ratio metrics, never a NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vggtctl.errors import EvaluationError
from vggtctl.services.metrics.align import align_depth

DEPTH_METRIC_KEYS = (
    "abs_rel",
    "sq_rel",
    "rmse",
    "rmse_log",
    "mae",
    "delta1",
    "delta2",
    "delta3",
    "inlier_1.03",
)
MIN_DEPTH = 1e-5  # clamp before log/ratios (FACTS §4; Marigold's ETH3D minimum)

# How each alignment aggregates a scene: per-image alignments follow the monocular protocol (metrics per
# frame, then the mean over frames); one scale per scene follows the video-depth protocol of CUT3R/Pi3
# (metrics over all valid pixels of the scene at once).
AGGREGATION = {
    "median": "mean over frames",
    "lstsq": "mean over frames",
    "none": "mean over frames",
    "scene-median": "pooled over all valid pixels of the scene",
}


def valid_depth_mask(gt: np.ndarray) -> np.ndarray:
    """Valid ground-truth pixels: finite and > 0 (the ETH3D reader already zeroes inf and mask==2)."""
    gt = np.asarray(gt)
    with np.errstate(invalid="ignore"):
        return np.isfinite(gt) & (gt > 0)


def depth_metrics(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """All depth metrics of ``pred`` against ``gt`` over ``mask`` (default: ``valid_depth_mask(gt)``).

    Args:
        pred: Predicted (already aligned) depth, any shape.
        gt: Ground-truth depth, same shape.
        mask: Boolean mask of pixels to score, same shape.

    Returns:
        ``{key: value}`` for every key of ``DEPTH_METRIC_KEYS`` plus ``valid_pixels``.

    Raises:
        EvaluationError: No valid pixel.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise EvaluationError(f"depth shapes differ: prediction {pred.shape} vs ground truth {gt.shape}")
    m = valid_depth_mask(gt) if mask is None else (np.asarray(mask, dtype=bool) & valid_depth_mask(gt))
    n = int(m.sum())
    if n == 0:
        raise EvaluationError(
            "zero valid ground-truth depth pixels to evaluate",
            "check the scene's ground_truth_depth files (vggtctl download eth3d --scenes <scene>)",
        )
    g = gt[m]
    d = pred[m]
    d = np.where(np.isfinite(d), d, 0.0)
    dc = np.maximum(d, MIN_DEPTH)
    diff = d - g
    ratio = np.maximum(dc / g, g / dc)
    log_diff = np.log(dc) - np.log(g)
    return {
        "abs_rel": float(np.mean(np.abs(diff) / g)),
        "sq_rel": float(np.mean(diff**2 / g)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "rmse_log": float(np.sqrt(np.mean(log_diff**2))),
        "mae": float(np.mean(np.abs(diff))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
        "inlier_1.03": float(np.mean(ratio < 1.03)),
        "valid_pixels": n,
    }


@dataclass
class DepthResult:
    """Depth metrics of one scene under one alignment."""

    alignment: str
    aggregation: str
    metrics: dict[str, float]
    valid_pixels: int
    frames_scored: int
    nonfinite_pred_pixels: int
    per_frame: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "alignment": self.alignment,
            "aggregation": self.aggregation,
            "metrics": self.metrics,
            "valid_pixels": self.valid_pixels,
            "frames_scored": self.frames_scored,
            "nonfinite_pred_pixels": self.nonfinite_pred_pixels,
            "per_frame": self.per_frame,
        }


def evaluate_depth(
    pred: np.ndarray, gt: np.ndarray, alignment: str = "median", mask: np.ndarray | None = None
) -> tuple[DepthResult, np.ndarray]:
    """Align a scene's predicted depth maps and score them.

    Args:
        pred: Predicted depth ``[S, H, W]`` (a trailing channel of 1 is accepted).
        gt: Ground-truth depth ``[S, H, W]`` in the same (model) pixel grid, 0 where invalid.
        alignment: One of ``median``, ``scene-median``, ``lstsq``, ``none`` (see ``align_depth``).
        mask: Extra mask ``[S, H, W]`` of pixels to consider (ANDed with the valid ground truth).

    Returns:
        The ``DepthResult`` and the aligned prediction ``[S, H, W]`` (for error maps).

    Raises:
        EvaluationError: No frame has a valid pixel, or the alignment is degenerate.
    """
    pred = np.asarray(pred, dtype=np.float64)
    if pred.ndim == 4 and pred.shape[-1] == 1:
        pred = pred[..., 0]
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 3:
        raise EvaluationError(f"depth shapes differ: prediction {pred.shape} vs ground truth {gt.shape}")
    valid = valid_depth_mask(gt)
    if mask is not None:
        valid &= np.asarray(mask, dtype=bool)
    if not valid.any():
        raise EvaluationError(
            f"zero valid ground-truth depth pixels in {gt.shape[0]} frame(s)",
            "check the scene's ground_truth_depth files (vggtctl download eth3d --scenes <scene>)",
        )
    finite = np.isfinite(pred)
    nonfinite = int((~finite & valid).sum())
    pred = np.where(finite, pred, 0.0)
    aligned, params = align_depth(pred, gt, valid, alignment)
    per_frame: list[dict[str, float]] = []
    for i in range(pred.shape[0]):
        if not valid[i].any():
            per_frame.append({"frame_index": i, "valid_pixels": 0})
            continue
        row: dict[str, float] = {"frame_index": i, **depth_metrics(aligned[i], gt[i], valid[i])}
        row["scale"], row["shift"] = params[i]
        per_frame.append(row)
    scored = [r for r in per_frame if r["valid_pixels"] > 0]
    if alignment == "scene-median":
        metrics = depth_metrics(aligned, gt, valid)
        metrics["scale"] = params[0][0]
    else:
        metrics = {k: float(np.mean([r[k] for r in scored])) for k in DEPTH_METRIC_KEYS}
        metrics["valid_pixels"] = int(sum(r["valid_pixels"] for r in scored))
    result = DepthResult(
        alignment=alignment,
        aggregation=AGGREGATION[alignment],
        metrics=metrics,
        valid_pixels=int(valid.sum()),
        frames_scored=len(scored),
        nonfinite_pred_pixels=nonfinite,
        per_frame=per_frame,
    )
    return result, aligned
