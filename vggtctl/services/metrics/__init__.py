"""Evaluation metrics and alignments (numpy/scipy only, no torch): depth, cameras, point clouds.

The names below resolve lazily (PEP 562), so that importing one submodule, as ``vggtctl infer``'s chunk
alignment does with :mod:`.align`, does not also load the ETH3D protocol's compiled kernels (numba and
llvmlite: ~0.15 s and ~25-30 MiB of a process that never evaluates anything).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "align": (
        "DEPTH_ALIGNMENTS", "IcpResult", "Sim3", "align_depth", "icp", "lstsq_scale_shift", "median_scale",
        "scene_median_scale", "umeyama",
    ),
    "camera": (
        "CameraResult", "absolute_trajectory_error", "camera_centres", "camera_metrics", "pose_auc",
        "relative_pose_errors",
    ),
    "depth": ("DEPTH_METRIC_KEYS", "DepthResult", "depth_metrics", "evaluate_depth"),
    "eth3d_protocol": ("ETH3D_TOLERANCES", "Eth3dResult", "eth3d_metrics"),
    "pointcloud": (
        "NNIndex", "PointCloudResult", "pointcloud_metrics", "unproject_depth", "visible_points", "voxel_downsample",
    ),
}  # fmt: skip
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = [
    "CameraResult",
    "DEPTH_ALIGNMENTS",
    "DEPTH_METRIC_KEYS",
    "DepthResult",
    "ETH3D_TOLERANCES",
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
]  # the names of _EXPORTS (tests/test_layers.py checks they agree)

if TYPE_CHECKING:
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
    from vggtctl.services.metrics.eth3d_protocol import ETH3D_TOLERANCES, Eth3dResult, eth3d_metrics
    from vggtctl.services.metrics.pointcloud import (
        NNIndex,
        PointCloudResult,
        pointcloud_metrics,
        unproject_depth,
        visible_points,
        voxel_downsample,
    )


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
