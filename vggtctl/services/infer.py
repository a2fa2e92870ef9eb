"""Inference: one forward pass over all frames of a scene, and the files ``vggtctl infer`` writes.

:func:`predict` is the library call (model + preprocessed images -> numpy outputs); :func:`run_inference`
is the whole command (collect inputs, preprocess, load the model, predict, write npz/ply/colmap/meta).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vggtctl.data.preprocess import (
    ImageGeometry,
    check_images_readable,
    preprocess_images,
)
from vggtctl.defaults import DEFAULT_REPO
from vggtctl.errors import InputError, Problem, UsageError, raise_problems
from vggtctl.io.colmap import FORMATS as COLMAP_FORMATS, check_text_names
from vggtctl.paths import output_dir_problem
from vggtctl.progress import NULL_PROGRESS, Progress
from vggtctl.runtime import DTYPE_CHOICES, resolve_device, resolve_dtype, versions
from vggtctl.runtime.dist import dist_info
from vggtctl.runtime.precision import DtypeChoice, autocast
from vggtctl.services.bundle_adjust import BundleAdjustConfig
from vggtctl.services.colmap_tracks import valid_region
from vggtctl.services.infer_plan import InferPlan, settings_problems
from vggtctl.services.original_resolution import RESOLUTIONS, write_original_resolution
from vggtctl.utils.atomic import StagedDir, atomic_write_json
from vggtctl.utils.devices import device_problem

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
FORMATS = ("npz", "ply", "colmap")
POINT_SOURCES = ("depth", "head")
COLMAP_UNITS = ("original", "model")
DTYPES = DTYPE_CHOICES
CONF_THRESHOLD_RULE = "a finite number, or a percentage in [0%, 100%]"
META_NAME = "meta.json"


# ---------------------------------------------------------------- predict


def _np(t: Any) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def predict(
    model: Any,
    images: np.ndarray | torch.Tensor,
    *,
    device: str = "cpu",
    dtype: DtypeChoice | torch.dtype | str | None = None,
    query_points: np.ndarray | torch.Tensor | None = None,
    progress: Progress = NULL_PROGRESS,
) -> dict[str, np.ndarray]:
    """Run ONE forward pass of ``model`` over all frames and return numpy outputs without the batch dim.

    Args:
        model: A VGGT in eval mode (from :func:`vggtctl.load_model`).
        images: ``[S,3,H,W]`` float in [0, 1] (numpy or torch), H and W multiples of 14.
        device: Where to run; the model must already be there.
        dtype: Autocast precision (``None``/fp32: none; bf16/fp16: ``torch.autocast``).
        query_points: Optional ``[N,2]`` pixel (x, y) on frame 0 for the track head.
        progress: Receives stage messages.

    Returns:
        ``pose_enc [S,9]``, ``pose_enc_list [4,S,9]``, ``depth [S,H,W,1]``, ``depth_conf [S,H,W]``,
        ``world_points [S,H,W,3]``, ``world_points_conf [S,H,W]``, ``images [S,3,H,W]`` (present heads
        only), ``track [S,N,2]``/``vis``/``conf`` with queries, plus ``extrinsic [S,3,4]``,
        ``intrinsic [S,3,3]`` and ``world_points_from_depth [S,H,W,3]``, all float32.
    """
    import torch

    from vggtctl.models.vggt.geometry import pose_encoding_to_extri_intri, unproject_depth_map_to_point_map

    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if x.ndim != 4 or x.shape[1] != 3:
        raise InputError(
            f"images must be [S,3,H,W], got {list(x.shape)}", "use vggtctl.data.preprocess.load_images"
        )
    s, _, h, w = x.shape
    x = x.to(device=device, dtype=torch.float32)
    kwargs: dict[str, Any] = {}
    if query_points is not None:
        kwargs["query_points"] = torch.as_tensor(np.asarray(query_points, dtype=np.float32)).to(device)
    t0 = time.perf_counter()
    with torch.inference_mode(), autocast(device, dtype):
        out = model(x, **kwargs)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    progress.log(f"forward: {s} frames of {h}x{w} in {time.perf_counter() - t0:.2f}s")
    preds: dict[str, np.ndarray] = {}
    for key, value in out.items():
        if isinstance(value, (list, tuple)):
            preds[key] = np.stack([_np(v)[0] for v in value])
        elif isinstance(value, torch.Tensor):
            preds[key] = _np(value)[0]
    if "pose_enc" in out:
        extrinsic, intrinsic = pose_encoding_to_extri_intri(out["pose_enc"].float(), (h, w))
        preds["extrinsic"] = _np(extrinsic)[0]
        preds["intrinsic"] = _np(intrinsic)[0]
        if "depth" in preds:
            wp = unproject_depth_map_to_point_map(preds["depth"], preds["extrinsic"], preds["intrinsic"])
            preds["world_points_from_depth"] = np.asarray(wp, dtype=np.float32)
    return preds


# ---------------------------------------------------------------- inputs


@dataclass
class Frame:
    """One input frame: a name for outputs, where it came from, and (for videos) where and when in the video.

    Video frames are not decoded here: ``video``/``video_index`` say where to find the pixels, which
    are streamed when the frames are preprocessed (see ``services/infer_scale.DecodedFrames``).
    """

    name: str
    source: str
    path: Path | None = None
    image: Any = None
    video: Path | None = None
    video_index: int | None = None
    timestamp_s: float | None = None


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: p.name,
    )


def collect_frames(
    inputs: Sequence[str | os.PathLike[str]],
    *,
    every: int = 1,
    limit: int | None = None,
    fps: float | None = None,
) -> list[Frame]:
    """Expand files, folders (sorted, image extensions, case-insensitive) and videos into frames.

    Args:
        inputs: Image files, folders of images, or video files, in order.
        every: For videos, keep one frame in ``every``.
        limit: Keep at most this many video frames in total.
        fps: For videos, keep one frame per ``1/fps`` seconds instead (overrides ``every``).

    Raises:
        InputError: A path does not exist, a folder has no images, a video has no frames, or nothing was found.
    """
    from vggtctl.io.video import is_video, select_video_frames

    frames: list[Frame] = []
    for raw in inputs:
        p = Path(raw).expanduser()
        if p.is_dir():
            found = _images_in(p)
            if not found:
                raise InputError(
                    f"no images in {p} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})",
                    "pass the folder that holds the images, or the image files themselves",
                )
            frames.extend(Frame(name="", source=str(f), path=f) for f in found)
        elif p.is_file() and is_video(p):
            left = None if limit is None else max(limit - len(frames), 1)
            for ref in select_video_frames(p, every=every, fps=fps, limit=left):
                frames.append(
                    Frame(
                        name=ref.name,
                        source=f"{p}#{ref.index}",
                        video=p,
                        video_index=ref.index,
                        timestamp_s=ref.timestamp_s,
                    )
                )
        elif p.is_file():
            frames.append(Frame(name="", source=str(p), path=p))
        else:
            raise InputError(f"input not found: {p}", "pass image files, folders of images or a video file")
    if not frames:
        raise InputError("no input frames", "pass image files, folders of images or a video file")
    _name_frames(frames)
    return frames


def _name_frames(frames: list[Frame]) -> None:
    """Names for COLMAP's images.txt: paths relative to the inputs' common folder (basenames usually)."""
    files = [f for f in frames if f.path is not None]
    if files:
        parents = [str(f.path.resolve().parent) for f in files]  # type: ignore[union-attr]
        root = Path(os.path.commonpath(parents))
        for f in files:
            f.name = f.path.resolve().relative_to(root).as_posix()  # type: ignore[union-attr]
    seen: dict[str, int] = {}
    for f in frames:
        n = seen.get(f.name, 0)
        seen[f.name] = n + 1
        if n:
            stem, dot, ext = f.name.rpartition(".")
            f.name = f"{stem}_{n}.{ext}" if dot else f"{f.name}_{n}"


# ---------------------------------------------------------------- config / result


@dataclass
class InferConfig:
    """Everything ``vggtctl infer`` needs (defaults = the CLI's defaults)."""

    inputs: list[str]
    out: Path = Path("vggt_out")
    model: str = DEFAULT_REPO
    preset: str | None = None
    revision: str | None = None
    mode: str = "crop"
    device: str = "auto"
    dtype: str = "auto"
    points: str = "depth"
    conf_threshold: str = "50%"
    formats: tuple[str, ...] = FORMATS
    colmap_units: str = "original"
    colmap_format: str = "bin"
    every: int = 1
    fps: float | None = None
    max_points: int = 500_000
    max_memory: str | None = None
    chunk: str = "auto"
    chunk_size: int | None = None
    overlap: int | None = None
    dry_run: bool = False
    resolution: str = "model"
    colmap_tracks: bool = True
    bundle_adjust: bool = False
    ba_queries: int = 256
    ba_min_observations: int = 16
    ba_refine_focal: bool = True

    def problems(self) -> list[Problem]:
        """Every bad setting, about values (empty: the config is valid). Touches no file but ``out``."""
        problems: list[Problem] = []

        def choice(name: str, value: str, allowed: Sequence[str]) -> None:
            if value not in allowed:
                problems.append(Problem.of(name, f"allowed: {', '.join(allowed)}", value))

        choice("mode", self.mode, ("crop", "pad"))
        choice("points", self.points, POINT_SOURCES)
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            problems.append(Problem.of("formats", f"allowed: {', '.join(FORMATS)}", list(self.formats)))
        choice("colmap_units", self.colmap_units, COLMAP_UNITS)
        choice("colmap_format", self.colmap_format, COLMAP_FORMATS)
        choice("resolution", self.resolution, RESOLUTIONS)
        if self.bundle_adjust and "colmap" not in self.formats:
            problems.append(
                Problem.of("bundle_adjust", "refines the COLMAP model: add colmap to --format", True)
            )
        for name in ("every", "max_points", "ba_queries", "ba_min_observations"):
            if getattr(self, name) < 1:
                problems.append(Problem.of(name, "must be >= 1", getattr(self, name)))
        problems.extend(
            settings_problems(
                max_memory=self.max_memory,
                chunk=self.chunk,
                chunk_size=self.chunk_size,
                overlap=self.overlap,
                fps=self.fps,
                every=self.every,
            )
        )
        device_reason = device_problem(self.device)
        if device_reason is not None:
            problems.append(Problem.of("device", device_reason, self.device))
        choice("dtype", self.dtype, DTYPES)
        try:
            parse_conf_threshold(self.conf_threshold)
        except UsageError:
            problems.append(Problem.of("conf_threshold", CONF_THRESHOLD_RULE, self.conf_threshold))
        out_problem = output_dir_problem("out", Path(self.out))
        if out_problem is not None:
            problems.append(out_problem)
        return problems

    def validate(self) -> None:
        """Raise one ConfigError naming every bad setting (a UsageError, exit 2)."""
        raise_problems("infer settings", self.problems(), "see `vggtctl infer --help` for the allowed values")


@dataclass
class InferResult:
    """What ``vggtctl infer`` produced."""

    out_dir: str
    frames: int
    image_size_hw: tuple[int, int]
    device: str
    dtype: str
    preset: str
    model_sha256: str
    points: int
    points_source: str
    conf_threshold: float | None
    colmap_units: str | None
    colmap_format: str | None = None
    resolution: str = "model"
    colmap_observations: int | None = None
    bundle_adjustment: dict[str, Any] | None = None
    files: dict[str, str] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
    chunks: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return asdict(self)


def parse_conf_threshold(value: str | float) -> tuple[str, float]:
    """``"50%"`` -> ("percentile", 50.0); ``"5"``/``5.0`` -> ("absolute", 5.0)."""
    text = str(value).strip()
    try:
        if text.endswith("%"):
            pct = float(text[:-1])
            if not 0 <= pct <= 100:  # also refuses nan
                raise ValueError
            return "percentile", pct
        absolute = float(text)
        if not math.isfinite(absolute):
            # nan keeps no point at all (every comparison is false); inf neither.
            raise ValueError
        return "absolute", absolute
    except ValueError:
        raise UsageError(
            f"confidence threshold {value!r}: {CONF_THRESHOLD_RULE}",
            "e.g. 50% (keep the most confident half) or 3 (absolute confidence)",
        ) from None


@contextlib.contextmanager
def _stage(name: str, timings: dict[str, float], progress: Progress) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    dt = time.perf_counter() - t0
    timings[name] = round(dt, 4)
    progress.log(f"[{name}] {dt:.2f}s")


# ---------------------------------------------------------------- point cloud / colmap


def select_pixels(
    preds: dict[str, np.ndarray],
    geoms: Sequence[ImageGeometry],
    *,
    points: str = "depth",
    conf_threshold: str | float = "50%",
    max_points: int = 500_000,
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    """Flat pixel indices ``frame * H * W + row * W + col`` of the points to keep, and the threshold.

    Pixels in white padding and non-finite points are dropped; a percentage threshold is a percentile of
    the confidences of the remaining pixels (so it never keeps nothing); beyond ``max_points`` a seeded
    uniform subset is kept.

    Raises:
        InputError: The model produced no such points, or no pixel is valid at all.
        UsageError: An absolute threshold above every confidence (the message names their range).
    """
    key, conf_key = (
        ("world_points_from_depth", "depth_conf")
        if points == "depth"
        else ("world_points", "world_points_conf")
    )
    if key not in preds or conf_key not in preds:
        raise InputError(
            f"the model produced no {key} (heads present: {sorted(preds)})",
            "use --points head or --points depth, whichever head the checkpoint has",
        )
    xyz = preds[key].reshape(-1, 3)
    conf = preds[conf_key].reshape(-1)
    valid = (
        np.stack([valid_region(g) for g in geoms]).reshape(-1)
        & np.isfinite(xyz).all(axis=1)
        & np.isfinite(conf)
    )
    if not valid.any():
        raise InputError(
            "no pixel holds a finite point outside the white padding",
            "the prediction is unusable: check the input images and the checkpoint",
        )
    kind, value = parse_conf_threshold(conf_threshold)
    thr = float(np.percentile(conf[valid], value)) if kind == "percentile" else float(value)
    keep = valid & (conf >= thr)
    idx = np.flatnonzero(keep)
    if len(idx) == 0:
        lo, hi = float(conf[valid].min()), float(conf[valid].max())
        raise UsageError(
            f"confidence threshold {value:g} keeps no point: the {points} confidences range from "
            f"{lo:.4g} to {hi:.4g}",
            f"pass a value at most {hi:.4g}, or a percentile such as --conf-threshold 50%",
        )
    if len(idx) > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=max_points, replace=False))
    return idx, thr


def select_points(
    preds: dict[str, np.ndarray],
    geoms: Sequence[ImageGeometry],
    *,
    points: str = "depth",
    conf_threshold: str | float = "50%",
    max_points: int = 500_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Confidence-filtered coloured points: ``(xyz [N,3] f32, rgb [N,3] u8, conf [N] f32, threshold)``.

    Which pixels: :func:`select_pixels`.
    """
    idx, thr = select_pixels(
        preds, geoms, points=points, conf_threshold=conf_threshold, max_points=max_points, seed=seed
    )
    xyz, rgb, conf = points_at(preds, idx, points)
    return xyz, rgb, conf, thr


def points_at(
    preds: dict[str, np.ndarray], idx: np.ndarray, points: str = "depth"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(xyz [N,3] f32, rgb [N,3] u8, conf [N] f32)`` of the flat pixel indices ``idx``."""
    key, conf_key = (
        ("world_points_from_depth", "depth_conf")
        if points == "depth"
        else ("world_points", "world_points_conf")
    )
    xyz = preds[key].reshape(-1, 3)[idx]
    conf = preds[conf_key].reshape(-1)[idx]
    _, _, h, w = preds["images"].shape
    f, rest = idx // (h * w), idx % (h * w)
    rgb = np.clip(np.rint(preds["images"][f, :, rest // w, rest % w] * 255.0), 0, 255).astype(np.uint8)
    return xyz.astype(np.float32), rgb.reshape(-1, 3), conf.astype(np.float32)


def _tracks_for_adjustment(
    model: Any,
    images: np.ndarray,
    preds: dict[str, np.ndarray],
    geoms: Sequence[ImageGeometry],
    config: InferConfig,
    device: str,
    dtype: Any,
    progress: Progress,
) -> tuple[Any, str | None]:
    """Track-head points for ``--bundle-adjust``, or why there are none."""
    from vggtctl.services.track_observations import track_observations, unavailable_reason

    reason = unavailable_reason(model, (int(images.shape[2]), int(images.shape[3])))
    if reason is None and "world_points_from_depth" not in preds:
        reason = "the checkpoint has no depth or camera head"
    if reason is not None:
        return None, reason
    tracked = track_observations(
        model, images, preds, geoms, device=device, dtype=dtype.autocast_dtype,
        queries_per_frame=config.ba_queries, progress=progress,
    )  # fmt: skip
    return tracked, None


def _write_colmap(
    folder: Path,
    preds: dict[str, np.ndarray],
    geoms: Sequence[ImageGeometry],
    names: list[str],
    xyz: np.ndarray,
    rgb: np.ndarray,
    idx: np.ndarray,
    thr: float | None,
    config: InferConfig,
    tracked: Any,
    ba_skip: str | None,
) -> tuple[int | None, dict[str, Any] | None]:
    """Write ``colmap/`` (bundle-adjusted when asked and kept); returns (observations, BA report)."""
    from vggtctl.services.colmap_output import export_observations, write_bundle_adjusted, write_export

    units, fmt = config.colmap_units, config.colmap_format
    report: dict[str, Any] | None = None
    if config.bundle_adjust:
        if tracked is None:
            report = {
                "refined": False,
                "reason": f"no track-head observations: {ba_skip}; the unrefined model is kept",
            }
        else:
            ba = BundleAdjustConfig(min_observations=config.ba_min_observations,
                                    refine_focal_length=config.ba_refine_focal)  # fmt: skip
            r = write_bundle_adjusted(folder, preds, geoms, names, tracked, units=units, fmt=fmt, config=ba)
            report = r.to_dict()
            if r.refined:
                return r.observations, report
    obs = None
    if config.colmap_tracks and "depth" in preds and thr is not None:
        obs = export_observations(preds, geoms, xyz, idx, thr if config.points == "depth" else -np.inf, units)
    write_export(folder, preds, geoms, names, xyz, rgb, obs, units=units, fmt=fmt)
    return (None if obs is None else len(obs)), report


# ---------------------------------------------------------------- the command


def _model_shape(config: InferConfig) -> tuple[Any, str]:
    from vggtctl.services.infer_scale import model_config_for

    return model_config_for(config.model, config.preset)


def _plan(
    config: InferConfig,
    model_cfg: Any,
    preset: str,
    frames: int,
    hw: tuple[int, int],
    device: str,
    world: int | None = None,
) -> InferPlan:
    """The memory plan; ``world`` devices per pass (default: the running process group's, agreed on)."""
    from vggtctl.services.infer_scale import agree_on_plan, plan_for, world_layout

    dtype = resolve_dtype(config.dtype, device)
    if world is not None:
        return plan_for(config, model_cfg, preset, frames, hw, device, dtype.name, dtype.weights, world)
    size, per_host = world_layout()
    return agree_on_plan(
        lambda: plan_for(
            config, model_cfg, preset, frames, hw, device, dtype.name, dtype.weights, size, per_host
        )
    )


def plan_run(config: InferConfig, progress: Progress = NULL_PROGRESS, *, world: int = 1) -> InferPlan:
    """``vggtctl infer --dry-run``: count the frames, size them from their headers, and plan; load nothing.

    ``world``: the devices the run would split every pass across (per-device numbers).

    Raises:
        UsageError: Bad options (including chunk size <= overlap).
        InputError: Missing inputs, a video without frames.
        MemoryPlanError: With chunking off, one pass needs more memory than available.
    """
    from vggtctl.services.infer_scale import input_hw

    config.validate()
    frames = collect_frames(config.inputs, every=config.every, fps=config.fps)
    model_cfg, preset = _model_shape(config)
    hw = input_hw(frames, config.mode, int(model_cfg.img_size))
    return _plan(config, model_cfg, preset, len(frames), hw, resolve_device(config.device), world)


def run_inference(
    config: InferConfig, progress: Progress = NULL_PROGRESS, *, model: Any = None
) -> InferResult:
    """Run ``vggtctl infer``: inputs -> preprocess -> memory plan -> load model -> forward(s) -> files.

    ``model`` is an already loaded VGGT (from :func:`vggtctl.load_model`, on ``config.device``) that a
    long-lived caller (``vggtctl app``) reuses across runs; ``None`` loads ``config.model``.

    Images are preprocessed as the reference does, to the model's ``img_size`` (518 for VGGT-1B).

    Writes into ``config.out``: ``predictions.npz``, ``points.ply``, ``colmap/{cameras,images,points3D}.txt``
    (as requested by ``formats``), ``frames/`` (decoded video frames, for COLMAP) and ``meta.json``.
    Everything is written into a hidden sibling folder first and moved in at the end, ``meta.json``
    last (the completion marker, see docs/run-directory.md): an interrupted or failed run leaves
    ``config.out`` as it was, and the outputs of an earlier run there are replaced as a whole.

    Raises:
        UsageError: Bad options (chunk size <= overlap, ...).
        MemoryPlanError: One pass does not fit and chunking is off (``chunk="off"``).
        InputError, CheckpointError, DownloadError: From inputs and model loading.
    """
    from vggtctl.io.predictions import previous_outputs
    from vggtctl.services.infer_scale import distributed

    config.validate()
    out = Path(config.out)
    if distributed() and not dist_info().is_rank_zero:
        # Other ranks of a multi-device run compute their frames and write nothing (rank 0 does).
        with tempfile.TemporaryDirectory(prefix="vggtctl-rank-") as scratch:
            return _run_inference(config, out, Path(scratch), NULL_PROGRESS)
    with StagedDir(out, marker=META_NAME, replace=previous_outputs(out)) as work:
        return _run_inference(config, out, work, progress, model)


def _run_inference(
    config: InferConfig, out: Path, work: Path, progress: Progress, model: Any = None
) -> InferResult:
    """The body of :func:`run_inference`: files go into ``work``, named by where they will be (``out``)."""
    import torch

    from vggtctl.io.ply import write_ply
    from vggtctl.io.predictions import output_sizes, save_predictions
    from vggtctl.services.infer_scale import DecodedFrames, forward, save_video_frames
    from vggtctl.services.model_loader import load_model

    timings: dict[str, float] = {}
    with _stage("collect inputs", timings, progress):
        frames = collect_frames(config.inputs, every=config.every, fps=config.fps)
    if "colmap" in config.formats and config.colmap_format == "txt":
        check_text_names([f.name for f in frames])  # before the model loads, not after the forward pass
    if config.bundle_adjust:
        from vggtctl.services.bundle_adjust import import_pycolmap

        import_pycolmap()  # a missing pycolmap must fail now, not after the forward pass
    model_cfg, preset = _model_shape(config)
    # The model's training resolution: 518 for VGGT-1B (the reference preprocessing), 168 for tiny.
    target = int(model_cfg.img_size)
    # Decode (streaming) and preprocess every frame before the model loads: a truncated JPEG must fail in
    # a second, not after a 5 GB checkpoint read; only model-size arrays are kept.
    with _stage("load images", timings, progress):
        try:
            images, geoms = preprocess_images(DecodedFrames(frames), config.mode, target)
        except InputError:
            # Name every unreadable file at once, not only the first one the stream met.
            check_images_readable([f.path for f in frames if f.image is None and f.video is None])
            raise
    progress.log(
        f"{len(frames)} frames -> {images.shape[3]}x{images.shape[2]} ({config.mode}, target {target})"
    )
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    plan = _plan(config, model_cfg, preset, len(frames), (int(images.shape[2]), int(images.shape[3])), device)
    for line in plan.lines():
        progress.log(line)
    if model is None:
        with _stage("load model", timings, progress):
            model = load_model(
                config.model,
                preset=config.preset,
                device=device,
                dtype=dtype.load_dtype,
                revision=config.revision,
                progress=progress,
            )
    prov = model.provenance
    with _stage("forward", timings, progress):
        preds, chunk_reports = forward(
            model, images, plan, device=device, dtype=dtype.autocast_dtype, progress=progress
        )
    if any(f.timestamp_s is not None for f in frames):
        preds["timestamps_s"] = np.array(
            [np.nan if f.timestamp_s is None else f.timestamp_s for f in frames], dtype=np.float64
        )
    tracked, ba_skip = None, None
    if config.bundle_adjust:
        with _stage("track", timings, progress):
            tracked, ba_skip = _tracks_for_adjustment(
                model, images, preds, geoms, config, device, dtype, progress
            )
    del model
    files: dict[str, str] = {}
    sources = [f.source for f in frames]
    names = [f.name for f in frames]
    if "npz" in config.formats:
        with _stage("write npz", timings, progress):
            files["npz"] = str(out / save_predictions(work, preds, geoms, sources, prov).name)
    if config.resolution == "original":
        if "depth" not in preds or "intrinsic" not in preds:
            raise InputError(
                "--resolution original needs the depth and camera heads, which this checkpoint lacks",
                "use --resolution model, or load the full checkpoint",
            )
        with _stage("write original resolution", timings, progress):
            files["original"] = str(out / write_original_resolution(work, preds, geoms, names).name)
    xyz = rgb = np.zeros((0, 3))
    idx = np.zeros(0, dtype=np.int64)
    thr: float | None = None
    if "ply" in config.formats or "colmap" in config.formats:
        with _stage("select points", timings, progress):
            idx, thr = select_pixels(
                preds,
                geoms,
                points=config.points,
                conf_threshold=config.conf_threshold,
                max_points=config.max_points,
            )
            xyz, rgb, conf = points_at(preds, idx, config.points)
        if "ply" in config.formats:
            with _stage("write ply", timings, progress):
                write_ply(work / "points.ply", xyz, rgb, scalars={"confidence": conf})
                files["ply"] = str(out / "points.ply")
    n_obs: int | None = None
    ba_report: dict[str, Any] | None = None
    if "colmap" in config.formats:
        with _stage("write colmap", timings, progress):
            # COLMAP needs the pixels: video frames are decoded again (streamed) and saved under frames/.
            save_video_frames(frames, work / "frames")
            for f in frames:
                if f.video is not None:
                    f.name = f"frames/{f.name}"
            names = [f.name for f in frames]
            n_obs, ba_report = _write_colmap(work / "colmap", preds, geoms, names, xyz, rgb, idx, thr, config,
                                             tracked, ba_skip)  # fmt: skip
            files["colmap"] = str(out / "colmap")
    dtype_name = dtype.name
    result = InferResult(
        out_dir=str(out),
        frames=len(frames),
        image_size_hw=(int(images.shape[2]), int(images.shape[3])),
        device=device
        if not device.startswith("cuda")
        else f"{device} ({torch.cuda.get_device_name(device)})",
        dtype=dtype_name,
        preset=prov.preset,
        model_sha256=prov.sha256,
        points=int(len(xyz)),
        points_source=config.points,
        conf_threshold=thr,
        colmap_units=config.colmap_units if "colmap" in config.formats else None,
        colmap_format=config.colmap_format if "colmap" in config.formats else None,
        resolution=config.resolution,
        colmap_observations=n_obs,
        bundle_adjustment=ba_report,
        files=files,
        timings_s=timings,
        plan=plan.to_dict(),
        chunks=[r.to_dict() for r in chunk_reports],
    )
    meta = {
        "tool": "vggtctl infer",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "provenance": prov.to_dict(),
        "versions": versions(),
        "settings": {
            k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
            for k, v in asdict(config).items()
        },
        "resolved": {
            "device": result.device,
            "dtype": dtype_name,
            "dtype_reason": dtype.reason,
            "weights_dtype": dtype.weights,
            "conf_threshold_value": thr,
            "ranks": dist_info().world_size,
        },
        "frames": [
            {
                "name": n,
                "source": s,
                "orig_hw": list(g.orig_hw),
                "resized_hw": list(g.resized_hw),
                "offset_xy": list(g.offset_xy),
                **({"timestamp_s": f.timestamp_s} if f.timestamp_s is not None else {}),
            }
            for n, s, g, f in zip(names, sources, geoms, frames, strict=True)
        ],
        # The memory plan (one pass or chunks, with the numbers) and, for chunked runs, how each chunk
        # was aligned: Sim(3) scale, residual relative to the overlap's extent, inliers, weak flag.
        "plan": result.plan,
        "chunks": result.chunks,
        "image_size_hw": list(result.image_size_hw),
        "colmap_units": result.colmap_units,
        "colmap_format": result.colmap_format,
        "colmap_observations": n_obs,
        "bundle_adjustment": ba_report,
        "resolution": config.resolution,
        "points": result.points,
        "files": files,
        "timings_s": timings,
        # What a reader checks before trusting the folder: every file this run wrote, with its size.
        "outputs": output_sizes(work),
    }
    atomic_write_json(work / META_NAME, meta)
    files["meta"] = str(out / META_NAME)
    return result
