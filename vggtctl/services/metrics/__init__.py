"""Evaluation metrics and alignments (numpy/scipy only, no torch): depth, cameras, point clouds."""

from __future__ import annotations

from vggtctl.services.metrics.align import (
    DEPTH_ALIGNMENTS,
    IcpResult,
    Sim3,
    align_depth,
    icp,
    lstsq_scale_shift,
    median_scale,
    scene_median_scale,
    umeyama,
)
from vggtctl.services.metrics.camera import (
    CameraResult,
    absolute_trajectory_error,
    camera_centres,
    camera_metrics,
    pose_auc,
    relative_pose_errors,
)
from vggtctl.services.metrics.depth import DEPTH_METRIC_KEYS, DepthResult, depth_metrics, evaluate_depth
from vggtctl.services.metrics.eth3d_protocol import (
    ETH3D_TOLERANCES,
    Eth3dResult,
    eth3d_metrics,
)
from vggtctl.services.metrics.pointcloud import (
    NNIndex,
    PointCloudResult,
    pointcloud_metrics,
    unproject_depth,
    visible_points,
    voxel_downsample,
)

__all__ = [
    "DEPTH_ALIGNMENTS",
    "DEPTH_METRIC_KEYS",
    "ETH3D_TOLERANCES",
    "CameraResult",
    "DepthResult",
    "Eth3dResult",
    "IcpResult",
    "NNIndex",
    "PointCloudResult",
    "Sim3",
    "absolute_trajectory_error",
    "align_depth",
    "camera_centres",
    "camera_metrics",
    "depth_metrics",
    "eth3d_metrics",
    "evaluate_depth",
    "icp",
    "lstsq_scale_shift",
    "median_scale",
    "pointcloud_metrics",
    "pose_auc",
    "relative_pose_errors",
    "scene_median_scale",
    "umeyama",
    "unproject_depth",
    "visible_points",
    "voxel_downsample",
]
