"""What ``vggtctl view`` shows, read from disk: cameras, their images and point sets (no viser here).

Sources, recognised in this order:

- a ``vggtctl infer`` output folder or a ``predictions.npz``: every frame's camera and model-input image,
  and two point sets, ``depth`` (depth map + camera, infer's default) and ``head`` (the point head), each
  with its confidence and the frame it came from;
- a COLMAP model folder (``cameras/images/points3D`` ``.bin`` or ``.txt``, also an infer folder's
  ``colmap/``): cameras, the images found beside the model, and its points (no confidence);
- an ``evaluate --save-vis`` scene folder (or its ``pointcloud_error.ply``): the aligned cloud coloured by
  its distance to the ground truth, with that error per point.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vggtctl.errors import InputError
from vggtctl.io.predictions import FILENAME as PREDICTIONS_NAME

ERROR_CLOUD_NAME = "pointcloud_error.ply"
# Frustum textures are small: they label a camera, and a 1M-point scene must still load fast.
THUMBNAIL_MAX_SIDE = 160


@dataclass
class ViewFrame:
    """One camera: world-to-camera ``extrinsic [3,4]`` (OpenCV axes), ``K [3,3]`` in pixels of ``hw``."""

    name: str
    extrinsic: np.ndarray
    K: np.ndarray
    hw: tuple[int, int]
    image: np.ndarray | None = None  # [h, w, 3] uint8 thumbnail, any size with the aspect of hw

    def center(self) -> np.ndarray:
        R, t = self.extrinsic[:, :3], self.extrinsic[:, 3]
        return -R.T @ t


@dataclass
class PointSet:
    """Points with colours and, where the source has them, a confidence, an error and a frame index."""

    xyz: np.ndarray  # [N, 3] float32
    rgb: np.ndarray  # [N, 3] uint8
    conf: np.ndarray | None = None  # [N] float32, higher = more confident
    frame: np.ndarray | None = None  # [N] int32, index into Scene.frames
    error: np.ndarray | None = None  # [N] float32, distance to the ground truth (evaluate outputs)

    def __len__(self) -> int:
        return len(self.xyz)


@dataclass
class Scene:
    """Everything the viewer draws; ``points`` maps a source name (depth, head, colmap, error) to a set."""

    source: str
    kind: str  # predictions | colmap | error cloud
    frames: list[ViewFrame] = field(default_factory=list)
    points: dict[str, PointSet] = field(default_factory=dict)

    @property
    def total_points(self) -> int:
        return sum(len(p) for p in self.points.values())


def _subsample(n: int, max_points: int, seed: int = 0) -> np.ndarray | None:
    """Sorted indices of a seeded uniform subset of ``max_points`` out of ``n`` (None: keep all)."""
    if n <= max_points:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def _take(ps: PointSet, idx: np.ndarray | None) -> PointSet:
    if idx is None:
        return ps
    return PointSet(
        ps.xyz[idx],
        ps.rgb[idx],
        None if ps.conf is None else ps.conf[idx],
        None if ps.frame is None else ps.frame[idx],
        None if ps.error is None else ps.error[idx],
    )


def _thumbnail(rgb: np.ndarray) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    s = THUMBNAIL_MAX_SIDE / max(h, w)
    if s >= 1:
        return np.ascontiguousarray(rgb)
    return cv2.resize(rgb, (max(int(w * s), 1), max(int(h * s), 1)), interpolation=cv2.INTER_AREA)


# ---------------------------------------------------------------- predictions


def scene_from_predictions(path: str | os.PathLike[str], max_points: int = 1_000_000) -> Scene:
    """Cameras, images and the depth/head point sets of a ``predictions.npz`` (or its folder).

    Pixels in white padding and non-finite points are dropped; each set is cut to ``max_points`` by a
    seeded uniform subset, so the confidence slider filters the same points every time.
    """
    from vggtctl.io.predictions import geometries_from_predictions, load_predictions
    from vggtctl.services.colmap_tracks import valid_region as _valid_region

    preds = load_predictions(path)
    if "extrinsic" not in preds or "intrinsic" not in preds:
        raise InputError(
            f"{path} holds no extrinsic/intrinsic (an older predictions file)",
            "re-run `vggtctl infer IMAGES --out DIR` and view DIR",
        )
    images = preds.get("images")
    s = len(preds["extrinsic"])
    h, w = (int(v) for v in preds["image_size_hw"]) if "image_size_hw" in preds else images.shape[-2:]
    rgb_frames = (
        np.clip(np.rint(images.transpose(0, 2, 3, 1) * 255.0), 0, 255).astype(np.uint8)
        if images is not None
        else np.full((s, h, w, 3), 200, np.uint8)
    )
    names = [Path(str(n)).name for n in preds.get("source_files", [f"frame_{i:04d}" for i in range(s)])]
    frames = [
        ViewFrame(
            names[i],
            preds["extrinsic"][i].astype(np.float64),
            preds["intrinsic"][i].astype(np.float64),
            (h, w),
            _thumbnail(rgb_frames[i]),
        )
        for i in range(s)
    ]
    try:
        valid_px = np.stack([_valid_region(g) for g in geometries_from_predictions(preds)])
    except KeyError:  # a bare predictions file without the geometry keys: every pixel counts
        valid_px = np.ones((s, h, w), dtype=bool)
    scene = Scene(str(path), "predictions", frames)
    frame_of_pixel = np.repeat(np.arange(s, dtype=np.int32), h * w)
    for name, key, conf_key in (
        ("depth", "world_points_from_depth", "depth_conf"),
        ("head", "world_points", "world_points_conf"),
    ):
        if key not in preds or conf_key not in preds:
            continue
        xyz = preds[key].reshape(-1, 3)
        conf = preds[conf_key].reshape(-1)
        keep = valid_px.reshape(-1) & np.isfinite(xyz).all(axis=1) & np.isfinite(conf)
        idx = np.flatnonzero(keep)
        sub = _subsample(len(idx), max_points)
        if sub is not None:
            idx = idx[sub]
        scene.points[name] = PointSet(
            xyz[idx].astype(np.float32),
            rgb_frames.reshape(-1, 3)[idx],
            conf[idx].astype(np.float32),
            frame_of_pixel[idx],
        )
    if not scene.points:
        raise InputError(
            f"{path} has no point maps (keys: {sorted(preds)[:12]})",
            "re-run `vggtctl infer` with a full model",
        )
    return scene


# ---------------------------------------------------------------- COLMAP


def _find_image(model_dir: Path, name: str) -> Path | None:
    """An image of the model: beside it (``images/``, the parent folder, infer's ``frames/``)."""
    for root in (model_dir, model_dir.parent, model_dir.parent.parent):
        for candidate in (root / "images" / name, root / name):
            if candidate.is_file():
                return candidate
    return None


def _sources_from_meta(model_dir: Path) -> dict[str, Path]:
    """For an infer folder's ``colmap/``: frame name -> the source image meta.json recorded."""
    from vggtctl.io.predictions import read_infer_meta

    meta = read_infer_meta(model_dir.parent) or {}
    out: dict[str, Path] = {}
    for f in meta.get("frames") or []:
        if isinstance(f, dict) and "#" not in str(f.get("source", "")):
            out[str(f.get("name"))] = Path(str(f.get("source")))
    return out


def _load_rgb(path: Path) -> np.ndarray | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.draft("RGB", (THUMBNAIL_MAX_SIDE * 2, THUMBNAIL_MAX_SIDE * 2))
            return _thumbnail(np.asarray(im.convert("RGB")))
    except (OSError, UnidentifiedImageError):
        return None


def scene_from_colmap(folder: str | os.PathLike[str], max_points: int = 1_000_000) -> Scene:
    """Cameras (with the images found beside the model) and points of a COLMAP model folder."""
    from vggtctl.io.colmap import read_model

    model_dir = Path(folder)
    cameras, images, points = read_model(model_dir)
    recorded = _sources_from_meta(model_dir)
    frames = []
    for img in sorted(images.values(), key=lambda i: i.name):
        cam = cameras[img.camera_id]
        path = recorded.get(img.name)
        path = path if path is not None and path.is_file() else _find_image(model_dir, img.name)
        frames.append(
            ViewFrame(
                img.name,
                img.extrinsic(),
                cam.K(),
                (int(cam.height), int(cam.width)),
                None if path is None else _load_rgb(path),
            )
        )
    scene = Scene(str(model_dir), "colmap", frames)
    if points:
        pts = list(points.values())
        ps = PointSet(
            np.array([p.xyz for p in pts], dtype=np.float32).reshape(-1, 3),
            np.array([p.rgb for p in pts], dtype=np.uint8).reshape(-1, 3),
        )
        scene.points["colmap"] = _take(ps, _subsample(len(ps), max_points))
    return scene


# ---------------------------------------------------------------- evaluate --save-vis


def scene_from_error_cloud(path: str | os.PathLike[str], max_points: int = 1_000_000) -> Scene:
    """The aligned cloud ``evaluate --save-vis`` writes, in its error colours, with the error per point."""
    from vggtctl.io.ply import read_ply

    p = Path(path)
    ply = read_ply(p)
    xyz = np.stack([ply["x"], ply["y"], ply["z"]], axis=1).astype(np.float32)
    rgb = np.stack([ply["red"], ply["green"], ply["blue"]], axis=1).astype(np.uint8)
    ps = PointSet(xyz, rgb, error=np.asarray(ply["error"], dtype=np.float32) if "error" in ply else None)
    return Scene(str(p), "error cloud", [], {"error": _take(ps, _subsample(len(ps), max_points))})


# ---------------------------------------------------------------- dispatch


def load_scene(source: str | os.PathLike[str], max_points: int = 1_000_000) -> Scene:
    """Read whatever ``source`` is (see the module docstring) into a :class:`Scene`.

    Raises:
        InputError: The path does not exist, or holds no predictions, COLMAP model or error cloud.
    """
    from vggtctl.io.colmap import model_format

    p = Path(source).expanduser()
    if not p.exists():
        raise InputError(
            f"{p} does not exist", "pass an infer output folder, a predictions.npz or a COLMAP model folder"
        )
    if p.is_file():
        if p.suffix == ".npz":
            return scene_from_predictions(p, max_points)
        if p.suffix == ".ply":
            return scene_from_error_cloud(p, max_points)
        raise InputError(
            f"{p} is neither a predictions.npz nor an evaluate error cloud (.ply)",
            "pass an infer output folder, a predictions.npz or a COLMAP model folder",
        )
    if (p / PREDICTIONS_NAME).is_file():
        return scene_from_predictions(p, max_points)
    for model_dir in (p, p / "colmap", p / "sparse" / "0", p / "sparse"):
        try:
            model_format(model_dir)
        except InputError:
            continue
        return scene_from_colmap(model_dir, max_points)
    if (p / ERROR_CLOUD_NAME).is_file():
        return scene_from_error_cloud(p / ERROR_CLOUD_NAME, max_points)
    raise InputError(
        f"{p} holds no predictions.npz, COLMAP model (cameras.bin/.txt, also under colmap/ or sparse/0/) "
        f"or {ERROR_CLOUD_NAME}",
        "run `vggtctl infer IMAGES --out DIR` first, then `vggtctl view DIR`",
    )
