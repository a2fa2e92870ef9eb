"""One request of ``vggtctl app``: uploaded files -> ``vggtctl infer``'s own pipeline -> files to show.

Nothing here knows Gradio: :func:`reconstruct` takes paths and returns paths, so it is tested directly.
The model comes from a :class:`ModelCache` (one load per model choice per server, through
:func:`vggtctl.load_model`); inference is :func:`vggtctl.services.infer.run_inference` itself.
"""

from __future__ import annotations

import shutil
import threading
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vggtctl.errors import InputError, UsageError
from vggtctl.io.video import VIDEO_EXTENSIONS
from vggtctl.progress import NULL_PROGRESS, Progress
from vggtctl.services.infer import IMAGE_EXTENSIONS, InferConfig, collect_frames, run_inference
from vggtctl.utils.atomic import atomic_open

# Points in the page's GLB at most: the browser's viewer (Babylon.js) slows down well before infer's cap.
GLB_MAX_POINTS = 300_000


class ModelCache:
    """Loaded models by (source, device, load dtype): a server loads each model choice once.

    ``loads`` counts the loads per source, so a test can see that a second request reused the model.
    A lock makes two first requests for the same model load it once.
    """

    def __init__(self) -> None:
        self._models: dict[tuple[str, str, str], Any] = {}
        self._lock = threading.Lock()
        self.loads: dict[str, int] = {}

    def get(self, source: str, device: str, load_dtype: Any, progress: Progress = NULL_PROGRESS) -> Any:
        from vggtctl.services.model_loader import load_model

        key = (source, device, str(load_dtype))
        with self._lock:
            if key not in self._models:
                self._models[key] = load_model(source, device=device, dtype=load_dtype, progress=progress)
                self.loads[source] = self.loads.get(source, 0) + 1
            return self._models[key]


@dataclass
class AppRequest:
    """What the page sends: the uploads and the settings shown beside them."""

    files: list[str]
    model: str = "tiny"
    device: str = "auto"
    dtype: str = "auto"
    mode: str = "crop"
    points: str = "depth"
    conf_threshold: str = "50%"
    max_frames: int = 100
    every: int = 1


@dataclass
class AppResult:
    """The files one request produced (all inside its run folder) and a one-line summary."""

    run_dir: str
    glb: str
    npz: str
    ply: str
    colmap_zip: str
    summary: str
    frames: int
    points: int
    timings_s: dict[str, float] = field(default_factory=dict)


def check_uploads(files: Sequence[str]) -> list[Path]:
    """The uploads as paths, refusing anything that is not an image or a video by its extension.

    Raises:
        InputError: No file, or a file of another kind (named, with the allowed extensions).
    """
    paths = [Path(f) for f in files if f]
    if not paths:
        raise InputError("no files uploaded", "drop images (JPEG, PNG, ...) or one video into the box")
    allowed = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
    bad = [p.name for p in paths if p.suffix.lower() not in allowed]
    if bad:
        raise InputError(
            f"not an image or a video: {', '.join(bad)}",
            f"upload images ({', '.join(sorted(IMAGE_EXTENSIONS))}) or a video "
            f"({', '.join(sorted(VIDEO_EXTENSIONS))})",
        )
    videos = [p for p in paths if p.suffix.lower() in VIDEO_EXTENSIONS]
    if videos and len(paths) > 1:
        raise InputError(
            f"{len(videos)} video(s) among {len(paths)} files: upload either images or one video",
            "remove the extra files and upload again",
        )
    return paths


def _stage_inputs(paths: Sequence[Path], folder: Path) -> list[str]:
    """Copy uploads into ``folder`` under their own names (Gradio keeps each in a hashed temp folder,
    which would become part of the frame names in images.txt)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, p in enumerate(paths):
        target = folder / p.name
        if target.exists():
            target = folder / f"{p.stem}_{i}{p.suffix}"
        shutil.copyfile(p, target)
        out.append(str(target))
    return out


def _zip_folder(folder: Path, zip_path: Path) -> Path:
    with atomic_open(zip_path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, Path(folder.name) / p.relative_to(folder))
    return zip_path


def write_scene_glb(run_dir: Path, glb_path: Path, max_points: int = GLB_MAX_POINTS) -> Path:
    """The page's GLB: infer's ``points.ply`` (a seeded subset beyond ``max_points``) + one frustum per frame."""
    from vggtctl.io.glb import frustum_lines, write_glb
    from vggtctl.io.ply import read_ply
    from vggtctl.io.predictions import load_predictions

    ply = read_ply(run_dir / "points.ply")
    xyz = np.stack([ply["x"], ply["y"], ply["z"]], axis=1)
    rgb = np.stack([ply["red"], ply["green"], ply["blue"]], axis=1).astype(np.uint8)
    if len(xyz) > max_points:
        idx = np.sort(np.random.default_rng(0).choice(len(xyz), size=max_points, replace=False))
        xyz, rgb = xyz[idx], rgb[idx]
    preds = load_predictions(run_dir)
    h, w = (int(v) for v in preds["image_size_hw"])
    centres = np.array([-E[:, :3].T @ E[:, 3] for E in preds["extrinsic"]])
    span = np.concatenate([xyz, centres]) if len(xyz) else centres
    size = float(np.linalg.norm(np.percentile(span, 95, 0) - np.percentile(span, 5, 0))) or 1.0
    lines = frustum_lines(preds["extrinsic"], preds["intrinsic"], [(h, w)] * len(centres), 0.08 * size)
    return write_glb(glb_path, xyz, rgb, lines)


def reconstruct(
    request: AppRequest, run_dir: Path, cache: ModelCache, progress: Progress = NULL_PROGRESS
) -> AppResult:
    """Run ``vggtctl infer`` on the uploads into ``run_dir`` and add what the page shows.

    ``run_dir`` gets ``inputs/`` (the uploads), ``out/`` (infer's folder: predictions.npz, points.ply,
    colmap/, meta.json), ``scene.glb`` and ``colmap.zip``.

    Raises:
        InputError: Uploads that are not images or a video, or that cannot be decoded.
        UsageError: Bad settings (too many frames, a bad threshold), as ``vggtctl infer`` reports them.
    """
    from vggtctl.runtime import resolve_device, resolve_dtype

    paths = check_uploads(request.files)
    run_dir = Path(run_dir)
    inputs = _stage_inputs(paths, run_dir / "inputs")
    config = InferConfig(
        inputs=inputs if len(inputs) == 1 else [str(run_dir / "inputs")],
        out=run_dir / "out",
        model=request.model,
        mode=request.mode,
        device=request.device,
        dtype=request.dtype,
        points=request.points,
        conf_threshold=request.conf_threshold,
        every=request.every,
    )
    config.validate()
    n_frames = len(collect_frames(config.inputs, every=config.every))
    if n_frames > request.max_frames:
        raise UsageError(
            f"{n_frames} frames uploaded; this server takes at most {request.max_frames}",
            "upload fewer images, keep every N-th video frame, or restart with a larger --max-frames",
        )
    device = resolve_device(config.device)
    progress.log(f"[model] {request.model} on {device}")
    model = cache.get(request.model, device, resolve_dtype(config.dtype, device).load_dtype, progress)
    result = run_inference(config, progress, model=model)
    out = Path(result.out_dir)
    glb = write_scene_glb(out, run_dir / "scene.glb")
    colmap_zip = _zip_folder(out / "colmap", run_dir / "colmap.zip")
    h, w = result.image_size_hw
    summary = (
        f"{result.frames} frames at {w}x{h} on {result.device} ({result.dtype}), model {request.model} "
        f"(preset {result.preset}): {result.points:,} points, confidence >= {result.conf_threshold:.4g}; "
        f"forward {result.timings_s.get('forward', 0.0):.2f}s"
    )
    return AppResult(
        run_dir=str(run_dir),
        glb=str(glb),
        npz=str(out / "predictions.npz"),
        ply=str(out / "points.ply"),
        colmap_zip=str(colmap_zip),
        summary=summary,
        frames=result.frames,
        points=result.points,
        timings_s=result.timings_s,
    )
