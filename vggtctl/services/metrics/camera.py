"""Camera metrics: relative pose errors over all image pairs, RRA/RTA, AUC@30, and ATE after Sim(3).

Conventions follow VGGT's ``evaluation/test_co3d.py`` (the code behind the paper's AUC@30):

* Extrinsics are world→camera (OpenCV/COLMAP) ``[S, 3, 4]``. For every pair ``i < j`` the relative pose
  is ``T_i · T_j⁻¹``.
* Rotation error: geodesic angle between the predicted and true relative rotations.
* Translation error: angle between the relative translation directions, sign-agnostic (VGGT computes
  ``acos(|cos|)``, which makes its extra ``min(err, 180 − err)`` a no-op), so it lies in [0°, 90°]. A zero
  predicted baseline scores 90° (the worst possible).
* RRA@τ / RTA@τ: percent of pairs with error strictly below τ (τ = 5, 15, 30°).
* AUC@30: ``np.histogram`` of ``max(rot_err, trans_err)`` with integer bins ``[0,1), [1,2), …, [29,30]``,
  cumulative sum, mean → the mean over thresholds t = 1…30° of the fraction of pairs below t (the last
  bin includes exactly 30°), reported in percent.

Relative errors are invariant to any similarity transform of the world, so no alignment is needed.
ATE aligns predicted camera centres to the true ones with Umeyama Sim(3) and reports the RMSE (metres).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vggtctl.errors import EvaluationError
from vggtctl.services.metrics.align import Sim3, umeyama

ANGLE_THRESHOLDS = (5, 15, 30)


def _se3(extrinsic: np.ndarray) -> np.ndarray:
    ext = np.asarray(extrinsic, dtype=np.float64)
    if ext.ndim != 3 or ext.shape[1:] not in ((3, 4), (4, 4)):
        raise EvaluationError(f"extrinsics must be [S,3,4] or [S,4,4], got {ext.shape}")
    out = np.tile(np.eye(4), (ext.shape[0], 1, 1))
    out[:, :3, :] = ext[:, :3, :]
    return out


def _inverse_se3(t: np.ndarray) -> np.ndarray:
    inv = np.tile(np.eye(4), (t.shape[0], 1, 1))
    rt = np.transpose(t[:, :3, :3], (0, 2, 1))
    inv[:, :3, :3] = rt
    inv[:, :3, 3] = -np.einsum("nij,nj->ni", rt, t[:, :3, 3])
    return inv


def camera_centres(extrinsic: np.ndarray) -> np.ndarray:
    """Camera centres ``C = −Rᵀ t`` ``[S, 3]`` of world→camera extrinsics ``[S, 3, 4]``."""
    t = _se3(extrinsic)
    return -np.einsum("nji,nj->ni", t[:, :3, :3], t[:, :3, 3])


def rotation_angle_deg(rot_a: np.ndarray, rot_b: np.ndarray) -> np.ndarray:
    """Geodesic angle (degrees) between rotation matrices ``[N, 3, 3]``, accurate near 0° and 180°."""
    r = np.einsum("nji,njk->nik", rot_a, rot_b)  # R_aᵀ R_b
    cos = (np.trace(r, axis1=1, axis2=2) - 1.0) / 2.0
    axis = np.stack([r[:, 2, 1] - r[:, 1, 2], r[:, 0, 2] - r[:, 2, 0], r[:, 1, 0] - r[:, 0, 1]], axis=1)
    sin = np.linalg.norm(axis, axis=1) / 2.0
    return np.degrees(np.arctan2(sin, cos))


def translation_angle_deg(t_gt: np.ndarray, t_pred: np.ndarray) -> np.ndarray:
    """Sign-agnostic angle (degrees, in [0, 90]) between translation directions ``[N, 3]``.

    A zero-length vector on either side scores 90°, the worst possible (as in VGGT's code).
    """
    t_gt = np.asarray(t_gt, dtype=np.float64)
    t_pred = np.asarray(t_pred, dtype=np.float64)
    # atan2(|cross|, |dot|) keeps precision for tiny angles, where acos(cos) would lose it.
    cross = np.linalg.norm(np.cross(t_gt, t_pred), axis=1)
    dot = np.abs(np.sum(t_gt * t_pred, axis=1))
    ang = np.degrees(np.arctan2(cross, dot))
    zero = (np.linalg.norm(t_gt, axis=1) == 0) | (np.linalg.norm(t_pred, axis=1) == 0)
    return np.where(zero, 90.0, ang)


def pair_indices(n: int) -> tuple[np.ndarray, np.ndarray]:
    """All pairs ``i < j`` of ``n`` frames, in ``itertools.combinations`` order."""
    i, j = np.triu_indices(n, k=1)
    return i, j


@dataclass
class RelativeErrors:
    """Per-pair errors; ``skipped`` counts pairs whose true baseline is zero (direction undefined)."""

    pairs: np.ndarray  # [P, 2] frame indices
    rot_deg: np.ndarray  # [P]
    trans_deg: np.ndarray  # [P]
    skipped: int


def relative_pose_errors(pred_extrinsic: np.ndarray, gt_extrinsic: np.ndarray) -> RelativeErrors:
    """Relative rotation and translation angle errors over all pairs ``i < j``.

    Args:
        pred_extrinsic: Predicted world→camera ``[S, 3, 4]`` (any world frame and scale).
        gt_extrinsic: True world→camera ``[S, 3, 4]``.

    Returns:
        ``RelativeErrors``; pairs whose two true cameras share one centre are left out.

    Raises:
        EvaluationError: Fewer than 2 frames, mismatched counts, non-finite poses, or no pair with a
            non-zero true baseline (all cameras at one point).
    """
    pred, gt = _se3(pred_extrinsic), _se3(gt_extrinsic)
    if len(pred) != len(gt):
        raise EvaluationError(f"{len(pred)} predicted cameras vs {len(gt)} ground-truth cameras")
    if len(gt) < 2:
        raise EvaluationError(
            f"camera metrics need at least 2 frames, got {len(gt)}",
            "evaluate more frames (--frames N, N ≥ 2)",
        )
    if not np.isfinite(pred).all():
        raise EvaluationError(
            "the predicted cameras contain NaN/inf", "check the model output (vggtctl infer on this scene)"
        )
    i, j = pair_indices(len(gt))
    rel_gt = gt[i] @ _inverse_se3(gt[j])
    rel_pred = pred[i] @ _inverse_se3(pred[j])
    base = np.linalg.norm(rel_gt[:, :3, 3], axis=1)
    # float32-round-off scale, as in align.umeyama: below it two centres are one point
    keep = base > 1e-6 * float(np.abs(camera_centres(gt)).max()) + 1e-12
    if not keep.any():
        raise EvaluationError(
            f"all {len(gt)} ground-truth cameras are at one point: relative translation directions are undefined",
            "check the scene's calibration (images.txt) or pick other frames",
        )
    rot = rotation_angle_deg(rel_gt[keep, :3, :3], rel_pred[keep, :3, :3])
    trans = translation_angle_deg(rel_gt[keep, :3, 3], rel_pred[keep, :3, 3])
    return RelativeErrors(
        pairs=np.stack([i[keep], j[keep]], axis=1), rot_deg=rot, trans_deg=trans, skipped=int((~keep).sum())
    )


def pose_auc(rot_deg: np.ndarray, trans_deg: np.ndarray, max_threshold: int = 30) -> float:
    """VGGT's AUC (fraction in [0, 1]) of ``max(rot, trans)`` over integer thresholds 1…max_threshold."""
    err = np.maximum(np.asarray(rot_deg, dtype=np.float64), np.asarray(trans_deg, dtype=np.float64))
    if err.size == 0:
        raise EvaluationError("no camera pairs to compute the AUC from")
    hist, _ = np.histogram(err, bins=np.arange(max_threshold + 1))
    return float(np.mean(np.cumsum(hist / err.size)))


@dataclass
class CameraResult:
    """Camera metrics of one scene (angles in degrees, accuracies and AUC in percent, ATE in metres)."""

    pairs: int
    pairs_skipped: int
    rra: dict[str, float]
    rta: dict[str, float]
    auc30: float
    rot_err_mean: float
    trans_err_mean: float
    rot_err_median: float
    trans_err_median: float
    ate_rmse: float | None
    ate_mean: float | None
    ate_median: float | None
    ate_alignment: Sim3 | None
    errors: RelativeErrors | None = None
    ate_per_camera: np.ndarray | None = None
    ate_skipped: str | None = None  # why ATE is missing (e.g. every predicted centre at one point)

    def summary(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {f"rra@{t}": v for t, v in self.rra.items()}
        out.update({f"rta@{t}": v for t, v in self.rta.items()})
        out.update({"auc@30": self.auc30, "ate_rmse": self.ate_rmse})
        return out

    def to_dict(self) -> dict[str, object]:
        return {
            "pairs": self.pairs,
            "pairs_skipped": self.pairs_skipped,
            "rra": self.rra,
            "rta": self.rta,
            "auc@30": self.auc30,
            "rot_err_deg": {"mean": self.rot_err_mean, "median": self.rot_err_median},
            "trans_err_deg": {"mean": self.trans_err_mean, "median": self.trans_err_median},
            "ate": {"rmse": self.ate_rmse, "mean": self.ate_mean, "median": self.ate_median},
            "ate_alignment": None if self.ate_alignment is None else self.ate_alignment.to_dict(),
            "ate_skipped": self.ate_skipped,
            "per_pair": None
            if self.errors is None
            else {
                "pairs": self.errors.pairs.tolist(),
                "rot_err_deg": self.errors.rot_deg.tolist(),
                "trans_err_deg": self.errors.trans_deg.tolist(),
            },
            "ate_per_camera": None if self.ate_per_camera is None else self.ate_per_camera.tolist(),
        }


def absolute_trajectory_error(
    pred_extrinsic: np.ndarray, gt_extrinsic: np.ndarray
) -> tuple[np.ndarray, Sim3]:
    """Per-camera position error (metres) after Umeyama Sim(3) of predicted onto true camera centres.

    Raises:
        EvaluationError: The predicted or true centres all coincide (the similarity is undefined).
    """
    pc, gc = camera_centres(pred_extrinsic), camera_centres(gt_extrinsic)
    sim = umeyama(pc, gc, with_scale=True, what="camera centres")
    return np.linalg.norm(sim.apply(pc) - gc, axis=1), sim


def camera_metrics(pred_extrinsic: np.ndarray, gt_extrinsic: np.ndarray) -> CameraResult:
    """All camera metrics of one scene; see the module docstring for the exact definitions.

    A prediction whose camera centres all coincide still gets its relative-pose metrics (its translation
    directions score 90°); only the ATE, which needs a similarity, is left out with ``ate_skipped``.

    Raises:
        EvaluationError: The relative errors cannot be computed (see ``relative_pose_errors``).
    """
    rel = relative_pose_errors(pred_extrinsic, gt_extrinsic)
    try:
        ate, sim = absolute_trajectory_error(pred_extrinsic, gt_extrinsic)
    except EvaluationError as e:
        ate, sim, skipped = None, None, e.message
    else:
        skipped = None
    return CameraResult(
        pairs=len(rel.rot_deg),
        pairs_skipped=rel.skipped,
        rra={str(t): float(np.mean(rel.rot_deg < t) * 100) for t in ANGLE_THRESHOLDS},
        rta={str(t): float(np.mean(rel.trans_deg < t) * 100) for t in ANGLE_THRESHOLDS},
        auc30=pose_auc(rel.rot_deg, rel.trans_deg, 30) * 100,
        rot_err_mean=float(rel.rot_deg.mean()),
        trans_err_mean=float(rel.trans_deg.mean()),
        rot_err_median=float(np.median(rel.rot_deg)),
        trans_err_median=float(np.median(rel.trans_deg)),
        ate_rmse=None if ate is None else float(np.sqrt(np.mean(ate**2))),
        ate_mean=None if ate is None else float(ate.mean()),
        ate_median=None if ate is None else float(np.median(ate)),
        ate_alignment=sim,
        errors=rel,
        ate_per_camera=ate,
        ate_skipped=skipped,
    )
