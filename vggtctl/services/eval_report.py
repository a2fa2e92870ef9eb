"""What ``evaluate`` returns: per-scene and overall reports, their JSON form, settings and versions."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vggtctl import __version__
from vggtctl.services.eval_config import DEFAULT_MODEL, EvalConfig
from vggtctl.services.metrics.align import DEPTH_ALIGNMENTS
from vggtctl.services.metrics.camera import CameraResult
from vggtctl.services.metrics.depth import AGGREGATION, DepthResult
from vggtctl.services.metrics.eth3d_protocol import (
    BEAM_DIVERGENCE_DEG,
    BEAM_START_RADIUS,
    ETH3D_VOXEL_SIZE,
    Eth3dResult,
)
from vggtctl.services.metrics.pointcloud import PointCloudResult

log = logging.getLogger(__name__)


@dataclass
class SceneReport:
    """Everything measured on one scene. ``None`` metrics were skipped (see ``warnings``)."""

    name: str
    frames: list[str]
    depth: dict[str, DepthResult] = field(default_factory=dict)
    camera: CameraResult | None = None
    pointcloud: Eth3dResult | None = None
    pointcloud_nn: PointCloudResult | None = None
    pointcloud_alignment: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    vis_files: list[str] = field(default_factory=list)

    def evaluated(self) -> bool:
        return (
            bool(self.depth)
            or self.camera is not None
            or self.pointcloud is not None
            or self.pointcloud_nn is not None
        )

    def to_dict(self) -> dict[str, Any]:
        depth = {}
        for key, res in self.depth.items():
            d = res.to_dict()
            for row in d["per_frame"]:  # type: ignore[union-attr]
                row["frame"] = self.frames[int(row["frame_index"])]
            depth[key] = d
        return {
            "name": self.name,
            "frames": self.frames,
            "depth": depth,
            "camera": self.camera.to_dict() if self.camera else None,
            "pointcloud": self.pointcloud.to_dict() if self.pointcloud else None,
            "pointcloud_nn": self.pointcloud_nn.to_dict() if self.pointcloud_nn else None,
            "pointcloud_alignment": self.pointcloud_alignment,
            "warnings": self.warnings,
            "timings_s": self.timings,
            "vis_files": self.vis_files,
        }


@dataclass
class EvalReport:
    """The result of ``evaluate``: settings, provenance, versions, per-scene results and their mean."""

    settings: dict[str, Any]
    provenance: dict[str, Any] | None
    versions: dict[str, str]
    scenes: list[SceneReport]
    warnings: list[str] = field(default_factory=list)
    out: str | None = None

    def mean(self) -> dict[str, Any]:
        """Unweighted mean over the scenes that have each metric, with the count of those scenes."""
        out: dict[str, Any] = {"depth": {}, "camera": None, "pointcloud": None, "pointcloud_nn": None}
        aligns = {a for s in self.scenes for a in s.depth}
        for a in sorted(aligns, key=list(DEPTH_ALIGNMENTS).index):
            rows = [s.depth[a].metrics for s in self.scenes if a in s.depth]
            keys = [k for k in rows[0] if k not in ("valid_pixels", "scale")]
            out["depth"][a] = {"scenes": len(rows), **{k: _mean(r[k] for r in rows) for k in keys}}
        cams = [s.camera.summary() for s in self.scenes if s.camera is not None]
        if cams:
            out["camera"] = {"scenes": len(cams), **{k: _mean(c[k] for c in cams) for k in cams[0]}}
            out["camera"]["ate_scenes"] = sum(c["ate_rmse"] is not None for c in cams)
        official = [s.pointcloud for s in self.scenes if s.pointcloud is not None]
        if official:
            pc: dict[str, Any] = {"scenes": len(official), "tolerances": official[0].tolerances}
            for name in ("completeness", "accuracy", "f1"):
                pc[name] = [
                    _mean(getattr(p, name)[i] for p in official) for i in range(len(pc["tolerances"]))
                ]
            out["pointcloud"] = pc
        pcs = [s.pointcloud_nn for s in self.scenes if s.pointcloud_nn is not None]
        if pcs:
            nn: dict[str, Any] = {
                "scenes": len(pcs),
                **{k: _mean(p.summary()[k] for p in pcs) for k in pcs[0].summary()},
            }
            for name in ("precision", "recall", "f1"):
                nn[f"nn_{name}"] = {t: _mean(getattr(p, name)[t] for p in pcs) for t in getattr(pcs[0], name)}
            out["pointcloud_nn"] = nn
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report; any non-finite number becomes ``null`` (and is logged), never NaN."""
        raw = {
            "vggtctl": __version__,
            "settings": self.settings,
            "provenance": self.provenance,
            "versions": self.versions,
            "scenes": [s.to_dict() for s in self.scenes],
            "mean": self.mean(),
            "warnings": self.warnings,
        }
        return _finite(raw, "report")


def _mean(values: Any) -> float | None:
    """Mean of the values that exist (a scene may lack one number, e.g. ATE); None if none does."""
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _finite(obj: Any, where: str) -> Any:
    if isinstance(obj, dict):
        return {k: _finite(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        log.warning("non-finite value at %s replaced by null", where)
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _provenance_dict(prov: Any) -> dict[str, Any] | None:
    if prov is None:
        return None
    if hasattr(prov, "to_dict"):
        return prov.to_dict()
    try:
        return asdict(prov)
    except TypeError:
        return {"repr": repr(prov)}


def _settings(config: EvalConfig, root: Path) -> dict[str, Any]:
    s = {
        k: (str(v) if isinstance(v, Path) else (list(v) if isinstance(v, tuple) else v))
        for k, v in asdict(config).items()
    }
    s["data"] = str(root)
    if config.predictions is None and config.reconstruction is None:
        s["model"] = config.model or DEFAULT_MODEL
    s["protocol"] = {
        "depth_valid_mask": "ground truth finite and > 0 (ETH3D inf and mask==2 already removed), model pixel grid",
        "depth_aggregation": {a: AGGREGATION[a] for a in config.depth_align},
        "depth_min_clamp": 1e-5,
        "camera_pairs": "all i<j, relative pose T_i·T_j⁻¹ (world→camera)",
        "translation_error": "sign-agnostic angle acos(|cos|) in [0°, 90°], zero baseline = 90°",
        "auc": "AUC@30 = mean over t = 1..30° of the fraction of pairs with max(rot, trans) < t (np.histogram bins)",
        "rra_rta_thresholds_deg": [5, 15, 30],
        "ate": "RMSE of camera centres after Umeyama Sim(3) onto the calibration (metres)",
        "pointcloud_points": "depth + predicted cameras" if config.points == "depth" else "point head",
        "pointcloud_alignment": f"Umeyama Sim(3) on {'valid-pixel point correspondences' if config.pc_align == 'points' else 'camera centres'}"
        + (f", then rigid point-to-point ICP ({config.icp_threshold} m)" if config.icp else ""),
        "pointcloud_reference": "ETH3D laser scans, each in its own frame (official protocol)"
        if config.pc_reference == "scan"
        else "ground-truth depth unprojected at valid pixels (nearest-neighbour figures only)",
        "pointcloud_pixels": "predicted points at valid ground-truth depth pixels",
        "pointcloud_metrics": "ETH3D official completeness/accuracy/F1 per tolerance (beam model, per-scan "
        "frames, two voxel grids, per-cell averaging), as ETH3DMultiViewEvaluation"
        if config.pc_reference == "scan"
        else "nearest-neighbour distances only (see pointcloud_nn)",
        "pointcloud_nn": "mean/median NN distances pred→gt and gt→pred, chamfer = their mean, "
        "nn_precision/nn_recall/nn_f1 = plain NN fractions within each tolerance (not ETH3D's protocol)",
        "nn_search": f"voxel pyramid from {config.voxel_size} m (far points against coarser grids), "
        f"at most {config.pc_max_points} seeded query points per side",
        "tolerances_m": list(config.tolerances),
        "eth3d_voxel_size_m": ETH3D_VOXEL_SIZE,
        "eth3d_beam_start_radius_m": BEAM_START_RADIUS,
        "eth3d_beam_divergence_deg": BEAM_DIVERGENCE_DEG,
        "voxel_size_m": config.voxel_size,
    }
    if config.reconstruction is not None:
        s["protocol"]["pointcloud_alignment"] = (
            "none: the cloud as given, in the scan world frame"
            if config.pc_align == "none"
            else "Sim(3) ICP (with scale) onto the scan points, from a centroid + RMS-size start"
        )
        s["protocol"]["pointcloud_pixels"] = "every finite point of the reconstruction PLY"
    return s
