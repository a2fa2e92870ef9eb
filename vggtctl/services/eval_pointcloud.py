"""Point-cloud scoring of ``evaluate``: align the predicted cloud, build the reference, measure."""

from __future__ import annotations

from typing import Any

import numpy as np

from vggtctl.errors import EvaluationError
from vggtctl.progress import Progress
from vggtctl.services.eval_config import _DOWNLOAD_HINT, EvalConfig
from vggtctl.services.eval_report import SceneReport
from vggtctl.services.metrics.align import icp, umeyama
from vggtctl.services.metrics.camera import camera_centres
from vggtctl.services.metrics.pointcloud import (
    PointCloudResult,
    pointcloud_metrics,
    subsample,
    unproject_depth,
    visible_points,
    voxel_downsample,
)

ICP_MAX_POINTS = 50_000


def _pointcloud(
    scene: Any,
    config: EvalConfig,
    preds: dict[str, np.ndarray],
    gt_depth: np.ndarray | None,
    k_model: np.ndarray,
    gt_ext: np.ndarray,
    pred_ext: np.ndarray,
    sr: SceneReport,
    progress: Progress,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Align the predicted cloud, build the reference cloud and score; returns (points, errors) for vis."""
    key = "world_points_from_depth" if config.points == "depth" else "world_points"
    if key not in preds:
        sr.warnings.append(f"point cloud skipped: the predictions have no {key!r} (use --points depth)")
        return None
    if gt_depth is None:
        sr.warnings.append("point cloud skipped: it needs ground-truth depth for the valid-pixel mask")
        return None
    if config.pc_reference == "scan" and not scene.has_scans():
        sr.warnings.append(
            "no laser scans: point-cloud metrics skipped (get them: "
            f"{_DOWNLOAD_HINT.format(scene=scene.name, kinds='scan_eval')}, or use --pc-reference depth)"
        )
        return None
    try:
        scan = None
        if config.pc_reference == "scan":
            progress.log(f"{scene.name}: loading laser scans")
            scan = scene.scan_points(max_points=config.max_scan_points, seed=config.seed)
        pred_points = np.asarray(preds[key]).reshape(*gt_depth.shape, 3)
        sr.pointcloud, sr.pointcloud_alignment, vis_pts, vis_err = score_pointcloud(
            pred_points, gt_depth, k_model, gt_ext, pred_ext, config, scan
        )
        return vis_pts, vis_err
    except EvaluationError as e:
        sr.warnings.append(f"point-cloud metrics skipped: {e.message}")
        return None


def score_pointcloud(
    pred_points: np.ndarray,
    gt_depth: np.ndarray,
    k_model: np.ndarray,
    gt_ext: np.ndarray,
    pred_ext: np.ndarray,
    config: EvalConfig,
    scan: np.ndarray | None = None,
) -> tuple[PointCloudResult, dict[str, Any], np.ndarray, np.ndarray]:
    """Align a scene's predicted points to the ground truth and score them.

    Args:
        pred_points: Predicted world points ``[S, H, W, 3]`` (any frame and scale).
        gt_depth: Ground-truth depth ``[S, H, W]`` in the model grid, 0 where invalid; its valid pixels
            select the predicted points and give the correspondences for ``pc_align="points"``.
        k_model: Calibrated intrinsics in the model grid ``[S, 3, 3]``.
        gt_ext: Calibrated world→camera ``[S, 3, 4]``.
        pred_ext: Predicted world→camera ``[S, 3, 4]`` (for ``pc_align="cameras"``).
        config: Alignment, ICP, reference, voxel and visibility settings.
        scan: Laser-scan points ``[N, 3]`` in the calibration frame (needed for ``pc_reference="scan"``).

    Returns:
        The metrics, a JSON-ready description of the alignment, and the voxelised aligned points with
        their distance to the reference (for the error cloud).

    Raises:
        EvaluationError: Degenerate alignment, no visible scan point, or empty clouds.
    """
    valid = gt_depth > 0
    pred_pts = np.asarray(pred_points, dtype=np.float64)[valid]
    gt_pts = unproject_depth(gt_depth, k_model, gt_ext)[valid]
    if config.pc_align == "points":
        sim = umeyama(pred_pts, gt_pts, min_rank=2, what="predicted points")
    else:
        sim = umeyama(camera_centres(pred_ext), camera_centres(gt_ext), min_rank=2, what="camera centres")
    info: dict[str, Any] = {"method": f"umeyama-sim3-on-{config.pc_align}", "sim3": sim.to_dict()}
    if config.pc_reference == "scan":
        if scan is None:
            raise EvaluationError("no laser-scan points given for --pc-reference scan")
        seen = scan[visible_points(scan, gt_depth, k_model, gt_ext, config.visibility_tolerance)]
        if len(seen) == 0:
            raise EvaluationError(
                f"none of the {len(scan)} laser-scan points is visible in the selected frames"
            )
        # Voxel averaging evens out the scanner's density (dense near each station), as ETH3D does.
        reference = voxel_downsample(seen, config.voxel_size)
        info.update(
            scan_points_loaded=int(len(scan)),
            scan_points_visible=int(len(seen)),
            visibility_tolerance=config.visibility_tolerance,
        )
    else:
        reference = gt_pts
    info.update(reference=config.pc_reference, reference_points=int(len(reference)))
    aligned = sim.apply(pred_pts)
    if config.icp:
        # A seeded subset of the prediction: six rigid parameters need far fewer than millions of pairs.
        res = icp(
            subsample(aligned, ICP_MAX_POINTS, config.seed), reference, max_distance=config.icp_threshold
        )
        aligned = res.transform.apply(aligned)
        info["icp"] = {
            "threshold": config.icp_threshold,
            "iterations": res.iterations,
            "fitness": res.fitness,
            "inlier_rmse": res.inlier_rmse,
            "transform": res.transform.to_dict(),
        }
    result, vis_pts, vis_err = pointcloud_metrics(
        aligned, reference, voxel_size=config.voxel_size, max_queries=config.pc_max_points, seed=config.seed
    )
    return result, info, vis_pts, vis_err
