"""Point-cloud scoring of ``evaluate``: align the predicted cloud, then score it.

Against the laser scans (``--pc-reference scan``, the default) the score is ETH3D's official protocol
(:mod:`vggtctl.services.metrics.eth3d_protocol`) on the whole aligned cloud and the scene's full scans.
The nearest-neighbour distances and thresholded NN precision/recall (``pointcloud_nn`` in the report)
are computed against GT depth unprojected (``--pc-reference depth``, the π³/CUT3R protocol) or, with
``--nn-metrics``, also against the scan points visible in the selected frames.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vggtctl.data.eth3d_scan import Eth3dScan
from vggtctl.errors import EvaluationError
from vggtctl.progress import Progress
from vggtctl.services.eval_config import _DOWNLOAD_HINT, EvalConfig
from vggtctl.services.eval_report import SceneReport
from vggtctl.services.metrics.align import icp, umeyama
from vggtctl.services.metrics.camera import camera_centres
from vggtctl.services.metrics.eth3d_protocol import Eth3dResult, eth3d_metrics
from vggtctl.services.metrics.pointcloud import (
    PointCloudResult,
    pointcloud_metrics,
    subsample,
    unproject_depth,
    visible_points,
    voxel_downsample,
)

ICP_MAX_POINTS = 50_000
UMEYAMA_MAX_POINTS = 200_000  # a seeded subset of the pixel correspondences: 7 parameters, ample


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
        scans = None
        if config.pc_reference == "scan":
            progress.log(f"{scene.name}: loading laser scans")
            scans = scene.scans()
        pred_points = np.asarray(preds[key]).reshape(*gt_depth.shape, 3)
        sr.pointcloud, sr.pointcloud_nn, sr.pointcloud_alignment, vis_pts, vis_err = score_pointcloud(
            pred_points, gt_depth, k_model, gt_ext, pred_ext, config, scans
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
    scans: list[Eth3dScan] | None = None,
) -> tuple[Eth3dResult | None, PointCloudResult | None, dict[str, Any], np.ndarray, np.ndarray]:
    """Align a scene's predicted points to the ground truth and score them.

    Args:
        pred_points: Predicted world points ``[S, H, W, 3]`` (any frame and scale).
        gt_depth: Ground-truth depth ``[S, H, W]`` in the model grid, 0 where invalid; its valid pixels
            select the predicted points and give the correspondences for ``pc_align="points"``.
        k_model: Calibrated intrinsics in the model grid ``[S, 3, 3]``.
        gt_ext: Calibrated world→camera ``[S, 3, 4]``.
        pred_ext: Predicted world→camera ``[S, 3, 4]`` (for ``pc_align="cameras"``).
        config: Alignment, ICP, reference, tolerance, voxel and visibility settings.
        scans: The scene's laser scans in their own frames (needed for ``pc_reference="scan"``).

    Returns:
        The official ETH3D metrics (``None`` with ``pc_reference="depth"``), the nearest-neighbour
        figures (``None`` against scans unless ``config.nn_metrics``), a JSON-ready description of the
        alignment, and aligned points with their distance to the reference (for the error cloud; empty
        when neither NN figures nor ``save_vis`` asked for them).

    Raises:
        EvaluationError: Degenerate alignment, no visible scan point, or empty clouds.
    """
    valid = gt_depth > 0
    pred_pts = np.asarray(pred_points)[valid].astype(np.float64)  # mask first: 5x less to convert
    gt_pts = unproject_depth(gt_depth, k_model, gt_ext)[valid]
    if config.pc_align == "points":
        # Seeded subset of the correspondences: a similarity has 7 parameters, and the full
        # millions of pixels cost a second for no visible change in the fit.
        idx = np.arange(len(pred_pts))
        if len(idx) > UMEYAMA_MAX_POINTS:
            idx = np.sort(
                np.random.default_rng(config.seed).choice(len(idx), UMEYAMA_MAX_POINTS, replace=False)
            )
        sim = umeyama(pred_pts[idx], gt_pts[idx], min_rank=2, what="predicted points")
    else:
        sim = umeyama(camera_centres(pred_ext), camera_centres(gt_ext), min_rank=2, what="camera centres")
    info: dict[str, Any] = {"method": f"umeyama-sim3-on-{config.pc_align}", "sim3": sim.to_dict()}
    aligned = sim.apply(pred_pts)
    official = None
    nn_reference = None
    if config.pc_reference == "scan":
        if not scans:
            raise EvaluationError("no laser scans given for --pc-reference scan")
        info.update(reference="scan", scan_points=sum(len(s.points) for s in scans))
        if config.icp or config.nn_metrics or config.save_vis is not None:
            world = np.concatenate([s.world_points() for s in scans]).astype(np.float64)
            seen = world[visible_points(world, gt_depth, k_model, gt_ext, config.visibility_tolerance)]
            if len(seen) == 0:
                raise EvaluationError(
                    f"none of the {len(world)} laser-scan points is visible in the selected frames"
                )
            seen = subsample(seen, config.max_scan_points, config.seed)
            # Voxel averaging evens out the scanner's density (dense near each station).
            nn_reference = voxel_downsample(seen, config.voxel_size)
            info.update(
                scan_points_visible=int(len(seen)),
                visibility_tolerance=config.visibility_tolerance,
                nn_reference_points=int(len(nn_reference)),
            )
    else:
        nn_reference = gt_pts
        info.update(reference="depth", nn_reference_points=int(len(nn_reference)))
    if config.icp:
        assert nn_reference is not None
        # A seeded subset of the prediction: six rigid parameters need far fewer than millions of pairs.
        res = icp(
            subsample(aligned, ICP_MAX_POINTS, config.seed), nn_reference, max_distance=config.icp_threshold
        )
        aligned = res.transform.apply(aligned)
        info["icp"] = {
            "threshold": config.icp_threshold,
            "iterations": res.iterations,
            "fitness": res.fitness,
            "inlier_rmse": res.inlier_rmse,
            "transform": res.transform.to_dict(),
        }
    if scans:
        official = eth3d_metrics(scans, aligned, tuple(config.tolerances))
    nn = None
    vis_pts, vis_err = np.zeros((0, 3)), np.zeros(0)
    if nn_reference is not None and (config.pc_reference == "depth" or config.nn_metrics or config.save_vis):
        nn, vis_pts, vis_err = pointcloud_metrics(
            aligned,
            nn_reference,
            voxel_size=config.voxel_size,
            tolerances=tuple(config.tolerances),
            max_queries=config.pc_max_points,
            seed=config.seed,
        )
        if config.pc_reference == "scan" and not config.nn_metrics:
            nn = None  # computed for the error cloud only
    return official, nn, info, vis_pts, vis_err
