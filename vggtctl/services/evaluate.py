"""``vggtctl evaluate``: depth, camera and point-cloud metrics of VGGT on ETH3D scenes.

The recipe, per scene (phases marked below):

1. select frames (all, or N by stride or seeded random sampling);
2. get predictions: one forward of the model over all selected frames (through the shared loader, so
   quantized models and adapters evaluate the same way), or a saved ``vggtctl infer`` predictions file;
3. ground truth in the model's pixel grid: ETH3D depth mapped into the undistorted image by the reader,
   resampled without crossing invalid pixels; calibration intrinsics rescaled to the model frame;
4. metrics: depth (per alignment), cameras (relative angles, AUC@30, ATE), point cloud (Sim(3) + optional
   ICP, then accuracy/completeness/overall and P/R/F1) — each skipped with a warning when the scene lacks
   what it needs, or when its inputs are degenerate;
5. optional visualisations, then the report (JSON-ready, never NaN).
"""

from __future__ import annotations

import logging
import math
import platform
import time
import zlib
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from vggtctl import __version__
from vggtctl.errors import EvaluationError, InputError, Problem, UsageError, raise_problems
from vggtctl.paths import eth3d_dir, output_dir_problem, output_file_problem
from vggtctl.progress import NULL_PROGRESS, Progress
from vggtctl.services.metrics.align import DEPTH_ALIGNMENTS, icp, umeyama
from vggtctl.services.metrics.camera import CameraResult, camera_centres, camera_metrics
from vggtctl.services.metrics.depth import AGGREGATION, DepthResult, evaluate_depth
from vggtctl.services.metrics.pointcloud import (
    ETH3D_TOLERANCES,
    PointCloudResult,
    pointcloud_metrics,
    subsample,
    unproject_depth,
    visible_points,
    voxel_downsample,
)
from vggtctl.utils.atomic import atomic_write_json
from vggtctl.utils.devices import device_problem

log = logging.getLogger(__name__)

DEFAULT_MODEL = "facebook/VGGT-1B"
SAMPLES = ("stride", "random")
POINT_SOURCES = ("depth", "head")
PC_ALIGNMENTS = ("points", "cameras")
PC_REFERENCES = ("scan", "depth")
ICP_MAX_POINTS = 50_000
_DOWNLOAD_HINT = "vggtctl download eth3d --scenes {scene} --kinds {kinds}"


@dataclass
class EvalConfig:
    """Everything ``evaluate`` needs; defaults are the documented protocol (docs/evaluate.md).

    Attributes:
        data: ETH3D root holding scene folders (default: the vggtctl dataset cache).
        scenes: Scene names to evaluate (default: every scene under ``data``).
        subset: ``all``/``facades``/``indoor``/``outdoor`` instead of ``scenes``.
        model: Model source for ``load_model`` (Hub id, local file/folder, ``tiny``).
        preset: Model preset, inferred when None.
        revision: Hub revision.
        predictions: A ``vggtctl infer`` output folder (one scene) or a folder of ``<scene>/`` outputs.
        frames: Number of frames per scene (None: all).
        stride: Take every ``stride``-th frame (``sample == "stride"``).
        sample: ``stride`` or ``random`` (seeded per scene).
        seed: Seed of the random frame sampling.
        image_size: Model input width (crop) or longest side (pad); None: the model's training size
            (``config.img_size``: 518 for VGGT-1B, as ``vggtctl infer`` does).
        mode: Preprocessing mode, ``crop`` or ``pad``.
        depth_align: Depth alignments to report.
        points: Predicted points from ``depth`` (depth + cameras) or the point ``head``.
        pc_align: Sim(3) on valid pixel ``points`` or on camera centres (``cameras``).
        icp: Refine the point-cloud alignment with rigid point-to-point ICP.
        icp_threshold: ICP correspondence distance (metres).
        pc_reference: Ground-truth cloud: visible laser-``scan`` points, or GT ``depth`` unprojected.
        voxel_size: Finest voxel of the nearest-neighbour search and of the scan averaging (metres; 0:
            exact search on raw points, slow).
        pc_max_points: Points scored per side (a seeded uniform subset beyond it; None: all).
        max_scan_points: Random subset of the scans loaded per scene (None: all).
        visibility_tolerance: Relative depth agreement for a scan point to count as seen by a view.
        save_vis: Folder for depth/error PNGs and coloured error point clouds.
        out: Where to write the JSON report.
        overwrite: Replace an existing report at ``out`` (otherwise that is a usage error).
        device: ``auto`` (cuda when available), ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: Compute precision: ``auto`` (bf16/fp16 on GPUs, fp32 on CPU), ``fp32``, ``bf16``, ``fp16``;
            weights stay as loaded and autocast lowers the matmuls, exactly as ``vggtctl infer``.
    """

    data: Path | None = None
    scenes: list[str] | None = None
    subset: str | None = None
    model: str | None = None
    preset: str | None = None
    revision: str | None = None
    predictions: Path | None = None
    frames: int | None = None
    stride: int = 1
    sample: str = "stride"
    seed: int = 0
    image_size: int | None = None
    mode: str = "crop"
    depth_align: tuple[str, ...] = ("median", "scene-median")
    points: str = "depth"
    pc_align: str = "points"
    icp: bool = False
    icp_threshold: float = 0.1
    pc_reference: str = "scan"
    voxel_size: float = 0.01
    pc_max_points: int | None = 100_000
    max_scan_points: int | None = 2_000_000
    visibility_tolerance: float = 0.05
    save_vis: Path | None = None
    out: Path | None = None
    overwrite: bool = False
    device: str = "auto"
    dtype: str = "auto"

    def problems(self) -> list[Problem]:
        """Every bad setting, named by field and value (empty: the config is valid).

        Cheap checks only (values, and whether ``out``/``save_vis`` can be written), so that a bad
        path is reported before the model loads and the scenes are read.
        """
        problems: list[Problem] = []

        def add(field: str | tuple[str, ...], reason: str, *value: Any) -> None:
            problems.append(Problem.of(field, reason, *value))

        def choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
            if value not in allowed:
                add(name, f"use {'/'.join(allowed)}", value)

        if self.model is not None and self.predictions is not None:
            add(("model", "predictions"), "give one, not both")
        if self.scenes and self.subset:
            add(("scenes", "subset"), "give one, not both")
        if self.frames is not None and self.frames < 2:
            add("frames", "camera metrics need at least 2", self.frames)
        if self.stride < 1:
            add("stride", "must be >= 1", self.stride)
        choice("sample", self.sample, SAMPLES)
        if self.sample == "random" and self.frames is None:
            add(("sample", "frames"), "random sampling needs a number of frames")
        if self.sample == "random" and self.stride != 1:
            add(("stride", "sample"), "a stride does not combine with random sampling; give one")
        if self.predictions is not None and (
            self.frames is not None or self.stride != 1 or self.sample != "stride"
        ):
            add(
                ("frames", "stride", "sample"),
                "do not apply to saved predictions (they are evaluated on their own frames)",
            )
        if not self.depth_align:
            add("depth_align", f"give at least one of {'/'.join(DEPTH_ALIGNMENTS)}")
        for a in self.depth_align:
            choice("depth_align", a, DEPTH_ALIGNMENTS)
        choice("points", self.points, POINT_SOURCES)
        choice("pc_align", self.pc_align, PC_ALIGNMENTS)
        choice("pc_reference", self.pc_reference, PC_REFERENCES)
        if not self.voxel_size >= 0:  # also refuses nan
            add("voxel_size", "must be >= 0", self.voxel_size)
        if not self.icp_threshold > 0:
            add("icp_threshold", "must be > 0", self.icp_threshold)
        if self.pc_max_points is not None and self.pc_max_points < 1000:
            add("pc_max_points", "at least 1000, or all points", self.pc_max_points)
        if self.max_scan_points is not None and self.max_scan_points < 1:
            add("max_scan_points", "must be >= 1, or all points", self.max_scan_points)
        if not 0 < self.visibility_tolerance < 1:
            add("visibility_tolerance", "must be in (0, 1)", self.visibility_tolerance)
        if self.image_size is not None and (self.image_size <= 0 or self.image_size % 14):
            add("image_size", "a positive multiple of 14, e.g. 518", self.image_size)
        choice("mode", self.mode, ("crop", "pad"))
        device_reason = device_problem(self.device)
        if device_reason is not None:
            add("device", device_reason, self.device)
        if self.out is not None:
            problems += filter(None, [output_file_problem("out", Path(self.out), self.overwrite)])
        if self.save_vis is not None:
            problems += filter(None, [output_dir_problem("save_vis", Path(self.save_vis))])
        return problems

    def validate(self) -> None:
        """Check every option and report all problems at once.

        Raises:
            ConfigError: One or more bad values (a UsageError), each named with what is allowed.
        """
        raise_problems(
            "evaluate settings", self.problems(), "see `vggtctl evaluate --help` for the allowed values"
        )


@dataclass
class SceneReport:
    """Everything measured on one scene. ``None`` metrics were skipped (see ``warnings``)."""

    name: str
    frames: list[str]
    depth: dict[str, DepthResult] = field(default_factory=dict)
    camera: CameraResult | None = None
    pointcloud: PointCloudResult | None = None
    pointcloud_alignment: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    vis_files: list[str] = field(default_factory=list)

    def evaluated(self) -> bool:
        return bool(self.depth) or self.camera is not None or self.pointcloud is not None

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
        out: dict[str, Any] = {"depth": {}, "camera": None, "pointcloud": None}
        aligns = {a for s in self.scenes for a in s.depth}
        for a in sorted(aligns, key=list(DEPTH_ALIGNMENTS).index):
            rows = [s.depth[a].metrics for s in self.scenes if a in s.depth]
            keys = [k for k in rows[0] if k not in ("valid_pixels", "scale")]
            out["depth"][a] = {"scenes": len(rows), **{k: _mean(r[k] for r in rows) for k in keys}}
        cams = [s.camera.summary() for s in self.scenes if s.camera is not None]
        if cams:
            out["camera"] = {"scenes": len(cams), **{k: _mean(c[k] for c in cams) for k in cams[0]}}
            out["camera"]["ate_scenes"] = sum(c["ate_rmse"] is not None for c in cams)
        pcs = [s.pointcloud for s in self.scenes if s.pointcloud is not None]
        if pcs:
            pc: dict[str, Any] = {
                "scenes": len(pcs),
                **{k: _mean(p.summary()[k] for p in pcs) for k in pcs[0].summary()},
            }
            for name in ("precision", "recall", "f1"):
                pc[name] = {t: _mean(getattr(p, name)[t] for p in pcs) for t in getattr(pcs[0], name)}
            out["pointcloud"] = pc
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


# ---------------------------------------------------------------------------------------------------
# Phase 0: which scenes, which frames


def select_scenes(root: Path, config: EvalConfig) -> list[str]:
    """Scene names to evaluate, in order; errors name what is missing and how to get it."""
    from vggtctl.services.eth3d import SUBSETS, list_scenes

    present = list_scenes(root)
    if config.scenes:
        missing = [s for s in config.scenes if s not in present]
        if missing:
            raise InputError(
                f"scene(s) {', '.join(missing)} not found under {root} (present: {', '.join(present) or 'none'})",
                f"vggtctl download eth3d --scenes {' '.join(missing)}",
            )
        return list(dict.fromkeys(config.scenes))
    if config.subset:
        if config.subset not in SUBSETS:
            raise UsageError(f"unknown subset {config.subset!r}", f"use one of: {', '.join(SUBSETS)}")
        chosen = [s for s in SUBSETS[config.subset] if s in present]
        if not chosen:
            raise InputError(
                f"no scene of subset {config.subset!r} under {root}",
                f"vggtctl download eth3d --subset {config.subset}",
            )
        return chosen
    if not present:
        raise InputError(
            f"no ETH3D scene under {root}", "vggtctl download eth3d --subset facades (or pass --data DIR)"
        )
    return present


def select_frame_indices(n: int, config: EvalConfig, scene: str) -> list[int]:
    """Indices (sorted) of the frames to evaluate out of ``n`` name-sorted frames.

    ``stride``: every ``stride``-th frame from the first, then the first ``frames`` of those.
    ``random``: ``frames`` distinct frames drawn with a generator seeded by ``(seed, crc32(scene))``, so a
    scene gets the same frames whichever other scenes are evaluated.
    """
    if config.sample == "random":
        k = min(config.frames or n, n)
        rng = np.random.default_rng([config.seed, zlib.crc32(scene.encode())])
        return sorted(int(i) for i in rng.choice(n, size=k, replace=False))
    idx = list(range(0, n, config.stride))
    return idx[: config.frames] if config.frames is not None else idx


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
    from vggtctl.services.eth3d import open_scene

    root = Path(config.data) if config.data is not None else eth3d_dir()
    scene_names = _scenes_for_run(root, config)
    # Check every scene's frames before loading a multi-GB model, so bad input fails fast.
    scenes = [open_scene(root / name) for name in scene_names]
    planned = {s.name: plan_frames(s, config) for s in scenes} if config.predictions is None else {}
    model: _Runner | None = None
    provenance: dict[str, Any] | None = None
    settings = _settings(config, root)
    if config.predictions is None:
        from vggtctl.services.infer import resolve_device, resolve_dtype
        from vggtctl.services.model_loader import load_model

        device = resolve_device(config.device)
        compute_dtype = resolve_dtype(config.dtype, device)
        settings["resolved_device"] = device
        settings["resolved_dtype"] = str(compute_dtype).replace("torch.", "")
        progress.log(f"loading model {config.model or DEFAULT_MODEL}")
        loaded = load_model(
            config.model or DEFAULT_MODEL,
            preset=config.preset,
            device=device,
            revision=config.revision,
            progress=progress,
        )
        size = config.image_size or int(getattr(getattr(loaded, "config", None), "img_size", 518))
        settings["resolved_image_size"] = size
        model = _Runner(loaded, device, compute_dtype, size)
        provenance = _provenance_dict(getattr(loaded, "provenance", None))
    report = EvalReport(settings=settings, provenance=provenance, versions=_versions(), scenes=[])
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


def _scenes_for_run(root: Path, config: EvalConfig) -> list[str]:
    if config.predictions is None:
        return select_scenes(root, config)
    pred_dir = Path(config.predictions)
    if not pred_dir.is_dir():
        raise InputError(
            f"predictions folder {pred_dir} does not exist", "run `vggtctl infer IMAGES --out DIR` first"
        )
    if (pred_dir / "predictions.npz").is_file():
        if config.scenes and len(config.scenes) == 1:
            return select_scenes(root, config)
        if config.scenes or config.subset:
            raise UsageError(
                f"{pred_dir} holds the predictions of one scene, but several scenes were selected",
                "pass one --scenes NAME, or a folder with one <scene>/predictions.npz per scene",
            )
        return [_scene_of_predictions(root, pred_dir)]
    available = sorted(p.parent.name for p in pred_dir.glob("*/predictions.npz"))
    if not available:
        raise InputError(
            f"no predictions.npz in {pred_dir} or its sub-folders",
            "run `vggtctl infer <scene>/images/dslr_images_undistorted --out DIR/<scene>` first",
        )
    if config.scenes or config.subset:
        chosen = select_scenes(root, config)
        missing = [s for s in chosen if s not in available]
        if missing:
            raise InputError(
                f"no predictions for scene(s) {', '.join(missing)} in {pred_dir} (found: {', '.join(available)})",
                "run `vggtctl infer` for them, or drop them from --scenes",
            )
        return chosen
    present = select_scenes(root, EvalConfig())
    unknown = [s for s in available if s not in present]
    if unknown:
        raise InputError(
            f"predictions for {', '.join(unknown)} but no such scene under {root}",
            "pass --data with the ETH3D root",
        )
    return available


def _scene_of_predictions(root: Path, pred_dir: Path) -> str:
    """The scene a single predictions file was made from, found by its source image paths."""
    from vggtctl.io.predictions import load_predictions

    sources = [Path(str(s)) for s in load_predictions(pred_dir)["source_files"]]
    names = select_scenes(root, EvalConfig())
    for s in sources:
        for part in s.parts:
            if part in names:
                return part
    raise InputError(
        f"cannot tell which scene {pred_dir / 'predictions.npz'} belongs to (sources like {sources[0] if sources else '?'})",
        "pass --scenes NAME",
    )


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
    s_count = len(frames)
    gt_ext = np.stack([f.extrinsic for f in frames])
    pred_ext = np.asarray(preds["extrinsic"], dtype=np.float64).reshape(s_count, 3, 4)

    # Phase 3: ground truth in the model's pixel grid
    t1 = time.perf_counter()
    gt_depth = _ground_truth_depth(scene, frames, geoms, sr, progress)
    k_model = _model_intrinsics(frames, geoms)
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


def plan_frames(scene: Any, config: EvalConfig) -> list[Any]:
    """The frames of ``scene`` to run the model on, after checking their image files.

    Raises:
        InputError: Fewer than 2 frames, or an image that is missing or whose size differs from its
            calibration (images and calibration from different downloads).
    """
    from PIL import Image, UnidentifiedImageError

    frames = [scene.frames[i] for i in select_frame_indices(len(scene.frames), config, scene.name)]
    if len(frames) < 2:
        raise InputError(
            f"scene {scene.name}: {len(frames)} frame(s) selected of {len(scene.frames)}, need at least 2",
            "lower --stride or raise --frames",
        )
    hint = "the images and the calibration come from different downloads; " + _DOWNLOAD_HINT.format(
        scene=scene.name, kinds="undistorted"
    )
    for f in frames:
        if not f.image_path.is_file():
            raise InputError(
                f"scene {scene.name}: images.txt lists {f.name} but {f.image_path} does not exist", hint
            )
        try:
            with Image.open(f.image_path) as im:  # reads the header only
                size = im.size
        except (OSError, UnidentifiedImageError) as e:
            raise InputError(f"cannot read image {f.image_path}: {e}", hint) from None
        if size != (f.width, f.height):
            raise InputError(
                f"scene {scene.name}: {f.image_path} is {size[0]}x{size[1]} but its calibration says "
                f"{f.width}x{f.height}",
                hint,
            )
    return frames


def _run_model(
    scene: Any, frames: list[Any], config: EvalConfig, runner: _Runner, progress: Progress
) -> tuple[dict[str, np.ndarray], list[Any], np.ndarray]:
    from vggtctl.services.infer import predict
    from vggtctl.services.preprocess import load_images

    progress.log(f"{scene.name}: {len(frames)} frames → model")
    images, geoms = load_images(
        [f.image_path for f in frames], mode=config.mode, target_size=runner.image_size
    )
    preds = predict(runner.model, images, device=runner.device, dtype=runner.dtype, progress=progress)
    return preds, geoms, images


def _load_saved(
    scene: Any, pred_root: Path
) -> tuple[list[Any], dict[str, np.ndarray], list[Any], dict | None]:
    import json

    from vggtctl.io.predictions import geometries_from_predictions, load_predictions

    folder = pred_root if (pred_root / "predictions.npz").is_file() else pred_root / scene.name
    preds = load_predictions(folder)
    for key in ("extrinsic", "depth", "source_files", "orig_hw", "image_size_hw"):
        if key not in preds:
            raise InputError(
                f"{folder / 'predictions.npz'} has no {key!r}",
                "re-run `vggtctl infer` with this vggtctl version",
            )
    frames = match_frames(scene, [str(s) for s in preds["source_files"]], preds["orig_hw"], folder)
    geoms = geometries_from_predictions(preds)
    prov = None
    if "provenance" in preds:
        try:
            prov = json.loads(str(preds["provenance"]))
        except ValueError:
            prov = {"raw": str(preds["provenance"])}
    return frames, preds, geoms, prov


def match_frames(scene: Any, source_files: list[str], orig_hw: np.ndarray, where: Path) -> list[Any]:
    """The scene frames that saved predictions were made from, in prediction order.

    A source path is matched to the scene's image files first, then (predictions made from another copy
    of the data) by its ``images.txt`` name or file name, provided no folder of the path names another
    scene. The image size recorded with the predictions must match the calibration.

    Raises:
        InputError: A source is not an image of this scene, or its size differs.
    """
    from vggtctl.services.eth3d import TRAINING_SCENES

    by_path = {f.image_path.resolve(): f for f in scene.frames}
    by_name = {f.name: f for f in scene.frames} | {f.stem: f for f in scene.frames}
    hint = "evaluate each predictions folder with the scene it was made from (--scenes NAME)"
    frames = []
    for i, src in enumerate(source_files):
        p = Path(src)
        f = by_path.get(p.resolve()) if p.is_file() else None
        if f is None:  # made from another copy of the data, or elsewhere: match by name
            others = set(TRAINING_SCENES) | {q.name for q in scene.root.parent.iterdir() if q.is_dir()}
            foreign = [part for part in p.parts[:-1] if part in others and part != scene.name]
            f = None if foreign else (by_name.get("/".join(p.parts[-2:])) or by_name.get(p.name))
        if f is None:
            raise InputError(
                f"{where / 'predictions.npz'}: frame {i} comes from {src}, not an image of scene {scene.name}",
                hint,
            )
        if tuple(int(v) for v in orig_hw[i]) != (f.height, f.width):
            raise InputError(
                f"{where / 'predictions.npz'}: frame {i} ({src}) was {orig_hw[i][1]}x{orig_hw[i][0]}, "
                f"scene {scene.name} calibrates {f.name} as {f.width}x{f.height}",
                hint,
            )
        frames.append(f)
    if len({f.name for f in frames}) != len(frames):
        raise InputError(f"{where / 'predictions.npz'} holds the same image twice", "re-run `vggtctl infer`")
    return frames


def _ground_truth_depth(
    scene: Any, frames: list[Any], geoms: list[Any], sr: SceneReport, progress: Progress
) -> np.ndarray | None:
    from vggtctl.services.eth3d import resample_depth

    if not scene.has_depth() or not scene.has_distorted_calibration():
        what = "ground-truth depth" if not scene.has_depth() else "the distorted calibration (jpg kind)"
        sr.warnings.append(
            f"no {what}: depth metrics skipped (get it: {_DOWNLOAD_HINT.format(scene=scene.name, kinds='depth,jpg')})"
        )
        return None
    progress.log(f"{scene.name}: ground-truth depth for {len(frames)} frames")
    out = np.stack([resample_depth(scene.gt_depth(f), g) for f, g in zip(frames, geoms, strict=True)]).astype(
        np.float64
    )
    if not (out > 0).any():
        sr.warnings.append(
            "zero valid ground-truth depth pixels in the selected frames: depth metrics skipped"
        )
        return None
    return out


def _model_intrinsics(frames: list[Any], geoms: list[Any]) -> np.ndarray:
    from vggtctl.services.preprocess import intrinsics_to_model

    return np.stack([intrinsics_to_model(f.K, g) for f, g in zip(frames, geoms, strict=True)])


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


# ---------------------------------------------------------------------------------------------------
# Report metadata


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
    if config.predictions is None:
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
        "pointcloud_reference": "laser-scan points visible in the selected frames"
        if config.pc_reference == "scan"
        else "ground-truth depth unprojected at valid pixels",
        "pointcloud_pixels": "predicted points at valid ground-truth depth pixels",
        "pointcloud_metrics": "mean NN distances (acc: pred→gt, comp: gt→pred, overall: mean); P/R/F1 by plain NN "
        "(simplified, not ETH3D's beam model)",
        "pointcloud_weighting": "one point per valid pixel for predictions and GT depth; scans voxel-averaged",
        "nn_search": f"voxel pyramid from {config.voxel_size} m (far points against coarser grids), "
        f"at most {config.pc_max_points} seeded query points per side",
        "tolerances_m": list(ETH3D_TOLERANCES),
        "voxel_size_m": config.voxel_size,
    }
    return s


def _versions() -> dict[str, str]:
    out = {"vggtctl": __version__, "python": platform.python_version()}
    for pkg in ("numpy", "scipy", "torch"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out
