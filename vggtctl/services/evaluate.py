"""``vggtctl evaluate``: depth, camera and point-cloud metrics of VGGT on ETH3D scenes.

The recipe, per scene (phases marked below):

1. select frames (all, or N by stride or seeded random sampling);
2. get predictions: one forward of the model over all selected frames (through the shared loader, so
   quantized models and adapters evaluate the same way), or a saved ``vggtctl infer`` predictions file;
3. ground truth in the model's pixel grid, from the data layer (``vggtctl.data``): ETH3D depth mapped
   from the distorted image straight onto the model grid without crossing invalid pixels (bounded
   memory, disk-cached); calibration intrinsics rescaled to the model frame;
4. metrics: depth (per alignment), cameras (relative angles, AUC@30, ATE), point cloud (Sim(3) + optional
   ICP, then accuracy/completeness/overall and P/R/F1) — each skipped with a warning when the scene lacks
   what it needs, or when its inputs are degenerate;
5. optional visualisations, then the report (JSON-ready, never NaN).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vggtctl.data.eth3d import open_scene, read_scans
from vggtctl.data.frames import plan_frames, select_frame_indices
from vggtctl.data.sample import SceneSample, load_sample, sample_from_geometries
from vggtctl.errors import EvaluationError, InputError
from vggtctl.paths import eth3d_dir
from vggtctl.progress import NULL_PROGRESS, Progress
from vggtctl.runtime import resolve_device, resolve_dtype, versions
from vggtctl.services.eval_config import _DOWNLOAD_HINT, DEFAULT_MODEL, EvalConfig
from vggtctl.services.eval_pointcloud import _pointcloud, score_pointcloud
from vggtctl.services.eval_report import EvalReport, SceneReport, _provenance_dict, _settings
from vggtctl.services.eval_saved import _load_saved, match_frames
from vggtctl.services.eval_scenes import _scenes_for_run, select_scenes
from vggtctl.services.metrics.camera import camera_metrics
from vggtctl.services.metrics.depth import evaluate_depth
from vggtctl.utils.atomic import atomic_write_json

__all__ = [
    "EvalConfig",
    "EvalReport",
    "SceneReport",
    "evaluate",
    "match_frames",
    "plan_frames",
    "score_pointcloud",
    "select_frame_indices",
    "select_scenes",
]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------
# The service


@dataclass
class _Runner:
    """A loaded model with the device and compute precision it runs at."""

    model: Any
    device: str
    dtype: Any
    image_size: int


def evaluate(config: EvalConfig, progress: Progress = NULL_PROGRESS) -> EvalReport:
    """Evaluate a model (or saved predictions) on ETH3D scenes.

    Args:
        config: What to evaluate and how (see ``EvalConfig``).
        progress: Receives per-scene progress and stage messages.

    Returns:
        The ``EvalReport`` (also written to ``config.out`` when set).

    Raises:
        UsageError: Invalid options.
        InputError: Missing scenes/files, images that do not match their calibration, predictions that
            belong to other images.
        EvaluationError: Nothing at all could be evaluated.
    """
    config.validate()
    if config.pc_reference == "scan":
        from vggtctl.services.metrics.eth3d_protocol import load_kernels_in_background

        load_kernels_in_background()  # hidden behind reading scenes and running the model

    root = Path(config.data) if config.data is not None else eth3d_dir()
    if config.reconstruction is not None:
        return _evaluate_reconstruction(config, root, progress)
    scene_names = _scenes_for_run(root, config)
    # Check every scene's frames before loading a multi-GB model, so bad input fails fast.
    scenes = [open_scene(root / name) for name in scene_names]
    planned = {s.name: plan_frames(s, config) for s in scenes} if config.predictions is None else {}
    model: _Runner | None = None
    provenance: dict[str, Any] | None = None
    settings = _settings(config, root)
    if config.predictions is None:
        from vggtctl.services.model_loader import load_model

        device = resolve_device(config.device)
        compute_dtype = resolve_dtype(config.dtype, device)
        settings["resolved_device"] = device
        settings["resolved_dtype"] = compute_dtype.name
        settings["resolved_dtype_reason"] = compute_dtype.reason
        settings["resolved_weights_dtype"] = compute_dtype.weights
        progress.log(f"loading model {config.model or DEFAULT_MODEL}")
        loaded = load_model(
            config.model or DEFAULT_MODEL,
            preset=config.preset,
            device=device,
            dtype=compute_dtype.load_dtype,
            revision=config.revision,
            progress=progress,
        )
        size = config.image_size or int(getattr(getattr(loaded, "config", None), "img_size", 518))
        settings["resolved_image_size"] = size
        model = _Runner(loaded, device, compute_dtype, size)
        provenance = _provenance_dict(getattr(loaded, "provenance", None))
    report = EvalReport(settings=settings, provenance=provenance, versions=versions(), scenes=[])
    task = progress.task("evaluating scenes", total=len(scene_names), unit="scene")
    try:
        for scene in scenes:
            sr, saved_provenance = _evaluate_scene(scene, planned.get(scene.name), config, model, progress)
            if report.provenance is None:
                report.provenance = saved_provenance
            report.scenes.append(sr)
            task.advance(1)
    finally:
        task.close()
    report.warnings = [f"{s.name}: {w}" for s in report.scenes for w in s.warnings]
    if not any(s.evaluated() for s in report.scenes):
        raise EvaluationError(
            f"nothing could be evaluated in {len(report.scenes)} scene(s): " + "; ".join(report.warnings[:3]),
            "download the ground truth: vggtctl download eth3d --scenes <scene> --kinds depth,jpg,scan_eval",
        )
    if config.out is not None:
        atomic_write_json(config.out, report.to_dict())
        report.out = str(config.out)
    return report


def _evaluate_reconstruction(config: EvalConfig, root: Path, progress: Progress) -> EvalReport:
    """One scene, one point cloud from any method, ETH3D's protocol (no model, no images needed)."""
    from vggtctl.services.eval_reconstruction import score_reconstruction

    assert config.scenes is not None
    name = config.scenes[0]
    scene_dir = root / name
    if not scene_dir.is_dir():
        raise InputError(
            f"scene folder {scene_dir} does not exist",
            f"vggtctl download eth3d --scenes {name} --kinds scan_eval (or pass --data ROOT)",
        )
    settings = _settings(config, root)
    report = EvalReport(settings=settings, provenance=None, versions=versions(), scenes=[])
    sr = SceneReport(name=name, frames=[])
    t0 = time.perf_counter()
    cloud = score_reconstruction(scene_dir, config, sr, progress)
    sr.timings["metrics"] = time.perf_counter() - t0
    if config.save_vis is not None:
        from vggtctl.services.eval_vis import save_error_cloud
        from vggtctl.services.metrics.pointcloud import NNIndex, subsample

        pts = subsample(cloud, config.pc_max_points, config.seed)
        world = np.concatenate([s.world_points() for s in read_scans(scene_dir)]).astype(np.float64)
        err = NNIndex(world, config.voxel_size).query(pts)
        sr.vis_files.append(
            str(save_error_cloud(Path(config.save_vis) / name / "pointcloud_error.ply", pts, err))
        )
    report.scenes.append(sr)
    report.warnings = [f"{name}: {w}" for w in sr.warnings]
    if config.out is not None:
        atomic_write_json(config.out, report.to_dict())
        report.out = str(config.out)
    return report


def _evaluate_scene(
    scene: Any, frames: list[Any] | None, config: EvalConfig, model: _Runner | None, progress: Progress
) -> tuple[SceneReport, dict[str, Any] | None]:
    """One scene, all phases; returns its report and the provenance stored with saved predictions."""
    t0 = time.perf_counter()
    # Phase 1+2: frames and predictions
    notes: list[str] = []
    prov = None
    if model is not None and frames is not None:
        if config.frames is not None and len(frames) < config.frames:
            notes.append(f"only {len(frames)} frames available for --frames {config.frames}")
        preds, geoms, images = _run_model(scene, frames, config, model, progress)
    else:
        frames, preds, geoms, prov = _load_saved(scene, Path(config.predictions))  # type: ignore[arg-type]
        images = preds.get("images")
    sr = SceneReport(name=scene.name, frames=[f.name for f in frames], warnings=notes)
    sr.timings["predict"] = time.perf_counter() - t0
    pred_ext = np.asarray(preds["extrinsic"], dtype=np.float64).reshape(len(frames), 3, 4)

    # Phase 3: ground truth in the model's pixel grid (the data layer; depth disk-cached)
    t1 = time.perf_counter()
    has_gt = _has_ground_truth(scene, sr)
    if has_gt:
        progress.log(f"{scene.name}: ground-truth depth for {len(frames)} frames")
    sample = sample_from_geometries(scene, frames, geoms, images=images, depth=has_gt, cache=True)
    gt_depth = _ground_truth_depth(sample, sr)
    k_model, gt_ext = sample.intrinsics, sample.extrinsics
    sr.timings["ground_truth"] = time.perf_counter() - t1

    # Phase 4: metrics
    t2 = time.perf_counter()
    aligned_depth: dict[str, np.ndarray] = {}
    if gt_depth is not None:
        pred_depth = np.asarray(preds["depth"], dtype=np.float64).reshape(gt_depth.shape)
        bad = int((~np.isfinite(pred_depth) & (gt_depth > 0)).sum())
        if bad:
            sr.warnings.append(
                f"{bad} predicted depth values on valid pixels are NaN/inf (scored as outliers)"
            )
        for a in config.depth_align:
            try:
                sr.depth[a], aligned_depth[a] = evaluate_depth(pred_depth, gt_depth, a)
            except EvaluationError as e:
                sr.warnings.append(f"depth ({a}) skipped: {e.message}")
    try:
        sr.camera = camera_metrics(pred_ext, gt_ext)
        if sr.camera.ate_skipped:
            sr.warnings.append(f"ATE skipped: {sr.camera.ate_skipped}")
    except EvaluationError as e:
        sr.warnings.append(f"camera metrics skipped: {e.message}")
    pc_vis = _pointcloud(scene, config, preds, gt_depth, k_model, gt_ext, pred_ext, sr, progress)
    sr.timings["metrics"] = time.perf_counter() - t2

    # Phase 5: visualisations
    if config.save_vis is not None:
        from vggtctl.services.eval_vis import save_depth_maps, save_error_cloud

        t3 = time.perf_counter()
        out = Path(config.save_vis) / scene.name
        if gt_depth is not None and aligned_depth:
            a = next(iter(aligned_depth))
            sr.vis_files += [
                str(p) for p in save_depth_maps(out, sr.frames, aligned_depth[a], gt_depth, images, a)
            ]
        if pc_vis is not None:
            sr.vis_files.append(str(save_error_cloud(out / "pointcloud_error.ply", *pc_vis)))
        sr.timings["vis"] = time.perf_counter() - t3
    return sr, prov


def _run_model(
    scene: Any, frames: list[Any], config: EvalConfig, runner: _Runner, progress: Progress
) -> tuple[dict[str, np.ndarray], list[Any], np.ndarray]:
    from vggtctl.services.infer import predict

    progress.log(f"{scene.name}: {len(frames)} frames → model")
    sample = load_sample(scene, frames, image_size=runner.image_size, mode=config.mode, depth=False)
    preds = predict(
        runner.model,
        sample.images,
        device=runner.device,
        dtype=runner.dtype.autocast_dtype,
        progress=progress,
    )
    return preds, sample.geometries, sample.images


def _has_ground_truth(scene: Any, sr: SceneReport) -> bool:
    if not scene.has_depth() or not scene.has_distorted_calibration():
        what = "ground-truth depth" if not scene.has_depth() else "the distorted calibration (jpg kind)"
        sr.warnings.append(
            f"no {what}: depth metrics skipped (get it: {_DOWNLOAD_HINT.format(scene=scene.name, kinds='depth,jpg')})"
        )
        return False
    return True


def _ground_truth_depth(sample: SceneSample, sr: SceneReport) -> np.ndarray | None:
    if sample.depth is None:
        return None
    if not sample.valid.any():  # type: ignore[union-attr]
        sr.warnings.append(
            "zero valid ground-truth depth pixels in the selected frames: depth metrics skipped"
        )
        return None
    return sample.depth.astype(np.float64)
