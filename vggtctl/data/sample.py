"""``SceneSample``: what a model sees of one scene, with the ground truth in the model's pixel grid.

Built from any scene folder the ETH3D reader opens (real ETH3D, or ``vggtctl download eth3d
--synthetic``): the frames' preprocessed images, how each frame became a model frame, ground-truth
depth on the model grid with its validity mask, the calibration intrinsics rescaled to the model grid
and the world-to-camera extrinsics. ``evaluate`` scores predictions against it; training reads it
through :class:`vggtctl.data.dataset.SceneDataset`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from vggtctl.data.cache import DepthCache, geometry_key, resolve_cache
from vggtctl.data.depth import model_grid_depth
from vggtctl.data.eth3d import Eth3dFrame, Eth3dScene, open_scene
from vggtctl.data.preprocess import load_images
from vggtctl.errors import InputError
from vggtctl.io.image_geometry import ImageGeometry, intrinsics_to_model

CacheArg = DepthCache | bool | str | os.PathLike[str] | None


@dataclass
class SceneSample:
    """One scene's frames as the model sees them, with ground truth in the model grid.

    Attributes:
        scene: Scene name.
        frames: The frames' ``images.txt`` names, in sample order (the first is the reference).
        images: ``[S, 3, H, W]`` float32 in [0, 1], preprocessed exactly as ``vggtctl infer`` does
            (None when built from geometries alone, e.g. for saved predictions).
        geometries: How each original image became its model frame (``ImageGeometry``).
        depth: ``[S, H, W]`` float32 ground-truth z-depth in metres on the model grid, 0 where invalid
            (None when built without depth).
        valid: ``[S, H, W]`` bool, ``depth > 0`` (None with ``depth``).
        intrinsics: ``[S, 3, 3]`` float64 calibration intrinsics in model-grid pixels.
        extrinsics: ``[S, 3, 4]`` float64 calibration world-to-camera ``[R|t]`` (OpenCV axes, metres).
    """

    scene: str
    frames: list[str]
    images: np.ndarray | None
    geometries: list[ImageGeometry]
    depth: np.ndarray | None
    valid: np.ndarray | None
    intrinsics: np.ndarray
    extrinsics: np.ndarray

    def __len__(self) -> int:
        return len(self.frames)

    def to_torch(self) -> dict[str, Any]:
        """The arrays as torch tensors (``images``, ``depth``, ``valid``, ``intrinsics``, ``extrinsics``)
        plus ``scene`` and ``frames``; absent arrays are left out."""
        import torch

        out: dict[str, Any] = {"scene": self.scene, "frames": list(self.frames)}
        for name in ("images", "depth", "valid", "intrinsics", "extrinsics"):
            value = getattr(self, name)
            if value is not None:
                out[name] = torch.from_numpy(np.ascontiguousarray(value))
        return out


def _open(scene: Eth3dScene | str | os.PathLike[str]) -> Eth3dScene:
    if isinstance(scene, (str, os.PathLike)):
        return open_scene(scene)
    return scene


def frame_depth(
    scene: Eth3dScene, frame: Eth3dFrame, geom: ImageGeometry, cache: CacheArg = True
) -> np.ndarray:
    """Ground-truth depth of one frame on the model grid ``geom.out_hw`` (float32, 0 invalid).

    Computed in bounded memory from the distorted depth map (:func:`vggtctl.data.depth.model_grid_depth`),
    or read from the disk cache when the same source bytes and target geometry were seen before.

    Raises:
        InputError: The scene lacks depth or the distorted calibration, or a file is malformed.
    """
    cam_d, ext_d = scene.distorted_camera(frame)
    cam_u = scene.cameras[frame.camera_id]
    store = resolve_cache(cache)
    key = None
    if store is not None:
        depth_file = scene.depth_path(frame)
        if not depth_file.is_file():
            scene.raw_depth(frame)  # raises the reader's error with its hint
        mask_file = scene.mask_path(frame)
        key = store.key(
            depth_file,
            mask_file if mask_file.is_file() else None,
            geometry_key(cam_u, frame.extrinsic, cam_d, ext_d, geom),
        )
        hit = store.load(key, tuple(int(v) for v in geom.out_hw))
        if hit is not None:
            return hit
    out = model_grid_depth(
        scene.raw_depth(frame), scene.mask(frame), cam_u, frame.extrinsic, cam_d, ext_d, geom, what=frame.name
    )
    if store is not None and key is not None:
        store.store(key, out)
    return out


def sample_from_geometries(
    scene: Eth3dScene | str | os.PathLike[str],
    frames: list[Eth3dFrame],
    geometries: list[ImageGeometry],
    *,
    images: np.ndarray | None = None,
    depth: bool = True,
    cache: CacheArg = True,
) -> SceneSample:
    """A ``SceneSample`` for frames whose model geometry is already known (e.g. saved predictions).

    Args:
        scene: An opened scene or its folder.
        frames: The frames, in sample order.
        geometries: One ``ImageGeometry`` per frame.
        images: The preprocessed images, if any.
        depth: Build the ground-truth depth (needs the scene's depth and jpg kinds).
        cache: ``True``: the default disk cache; ``False``: none; or a folder / ``DepthCache``.
    """
    scene = _open(scene)
    if len(frames) != len(geometries):
        raise InputError(f"{len(frames)} frames but {len(geometries)} geometries")
    gt = None
    if depth:
        gt = np.stack([frame_depth(scene, f, g, cache) for f, g in zip(frames, geometries, strict=True)])
    return SceneSample(
        scene=scene.name,
        frames=[f.name for f in frames],
        images=images,
        geometries=list(geometries),
        depth=gt,
        valid=None if gt is None else gt > 0,
        intrinsics=np.stack([intrinsics_to_model(f.K, g) for f, g in zip(frames, geometries, strict=True)]),
        extrinsics=np.stack([f.extrinsic for f in frames]).astype(np.float64),
    )


def load_sample(
    scene: Eth3dScene | str | os.PathLike[str],
    frames: list[Eth3dFrame] | list[str] | list[int] | None = None,
    *,
    image_size: int = 518,
    mode: str = "crop",
    depth: bool = True,
    cache: CacheArg = True,
) -> SceneSample:
    """Load frames of a scene as the model sees them, with their ground truth.

    Args:
        scene: An opened scene or its folder.
        frames: Frames (objects, ``images.txt`` names / file names, or indices into the name-sorted
            frames), in sample order; all frames when None.
        image_size: Model input width (``crop``) or longest side (``pad``), a multiple of 14.
        mode: ``crop`` or ``pad``, as ``vggtctl infer``.
        depth: Build the ground-truth depth (needs the scene's depth and jpg kinds).
        cache: ``True``: the default disk cache; ``False``: none; or a folder / ``DepthCache``.

    Raises:
        InputError: Unknown frames, unreadable images, missing ground truth.
    """
    scene = _open(scene)
    chosen = _frames(scene, frames)
    images, geoms = load_images([f.image_path for f in chosen], mode=mode, target_size=image_size)
    return sample_from_geometries(scene, chosen, geoms, images=images, depth=depth, cache=cache)


def _frames(scene: Eth3dScene, frames: list[Any] | None) -> list[Eth3dFrame]:
    if frames is None:
        return list(scene.frames)
    out = []
    for f in frames:
        if isinstance(f, (int, np.integer)):
            if not 0 <= int(f) < len(scene.frames):
                raise InputError(
                    f"scene {scene.name}: frame index {int(f)} out of range (0..{len(scene.frames) - 1})"
                )
            out.append(scene.frames[int(f)])
        elif isinstance(f, str):
            out.append(scene.frame(f))
        else:
            out.append(f)
    if not out:
        raise InputError(f"scene {scene.name}: no frames selected", "pass at least one frame")
    return out
