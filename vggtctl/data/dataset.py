"""``SceneDataset``: seeded frame sets drawn from ETH3D-layout scenes, for ``torch.utils.data.DataLoader``.

Item ``i`` is draw ``i % samples_per_scene`` of scene ``i // samples_per_scene``: ``frames_per_sample``
distinct frames, the first one the reference (VGGT predicts every camera relative to the first frame).
A draw depends only on ``(seed, epoch, scene name, draw)``, never on the worker or the order items
are asked for, so runs, workers and resumed runs see the same sets. :meth:`SceneDataset.set_epoch`
changes the draws per epoch (call it before iterating, like ``DistributedSampler.set_epoch``).

The dataset holds scene folders and settings only (no model, no open files), so it pickles small and
each worker re-opens the scenes it needs. Ground-truth depth comes from the disk cache after the first
epoch (see :mod:`vggtctl.data.cache`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vggtctl.data.cache import DepthCache, resolve_cache
from vggtctl.data.eth3d import Eth3dScene, open_scene
from vggtctl.data.frames import check_frame_images, draw_frame_set, mismatch_hint
from vggtctl.data.sample import SceneSample, load_sample
from vggtctl.errors import InputError, UsageError


class SceneDataset(Dataset):
    """Frame sets over scenes; each item is a :class:`SceneSample`.

    Args:
        scenes: Scene folders (``<root>/<scene>``) the ETH3D reader opens.
        frames_per_sample: Frames per item (at least 1; every scene must have this many).
        samples_per_scene: Items per scene and epoch.
        seed: Base seed of the draws.
        image_size: Model input size (multiple of 14).
        mode: ``crop`` or ``pad``.
        depth: Include ground-truth depth (needs the depth and jpg kinds of every scene).
        cache: Ground-truth depth disk cache: ``True`` (default location under ``VGGTCTL_HOME``), a
            folder, or ``False``.

    Raises:
        UsageError: Bad numbers.
        InputError: A folder that is not a scene, or a scene with too few frames or no depth.
    """

    def __init__(
        self,
        scenes: Sequence[str | os.PathLike[str]],
        frames_per_sample: int,
        *,
        samples_per_scene: int = 1,
        seed: int = 0,
        image_size: int = 518,
        mode: str = "crop",
        depth: bool = True,
        cache: DepthCache | bool | str | os.PathLike[str] | None = True,
    ) -> None:
        problems = []
        if frames_per_sample < 1:
            problems.append(f"frames per sample {frames_per_sample} (must be >= 1)")
        if samples_per_scene < 1:
            problems.append(f"samples per scene {samples_per_scene} (must be >= 1)")
        if image_size <= 0 or image_size % 14:
            problems.append(f"image size {image_size} (a positive multiple of 14, e.g. 518)")
        if mode not in ("crop", "pad"):
            problems.append(f"mode {mode!r} (use crop/pad)")
        if not scenes:
            problems.append("no scenes")
        if problems:
            raise UsageError("invalid dataset settings: " + "; ".join(problems), "fix the values above")
        self.scene_dirs = [Path(s) for s in scenes]
        self.frames_per_sample = frames_per_sample
        self.samples_per_scene = samples_per_scene
        self.seed = seed
        self.image_size = image_size
        self.mode = mode
        self.depth = depth
        self.cache = resolve_cache(cache)
        self.epoch = 0
        self.names: list[str] = []
        self.frame_counts: list[int] = []
        for d in self.scene_dirs:  # reads the calibration only: cheap, and bad folders fail here
            scene = open_scene(d)
            if len(scene.frames) < frames_per_sample:
                raise InputError(
                    f"scene {scene.name} has {len(scene.frames)} frames, fewer than {frames_per_sample} per sample",
                    "lower frames_per_sample or drop the scene",
                )
            if depth and not (scene.has_depth() and scene.has_distorted_calibration()):
                raise InputError(
                    f"scene {scene.name} has no ground-truth depth or no distorted calibration",
                    f"vggtctl download eth3d --scenes {scene.name} --kinds depth,jpg (or depth=False)",
                )
            self.names.append(scene.name)
            self.frame_counts.append(len(scene.frames))
        self._scenes: dict[int, Eth3dScene] = {}

    def __len__(self) -> int:
        return len(self.scene_dirs) * self.samples_per_scene

    def set_epoch(self, epoch: int) -> None:
        """Use the draws of ``epoch`` from now on (workers created afterwards see it)."""
        self.epoch = int(epoch)

    def frame_indices(self, index: int) -> list[int]:
        """The frame indices (into the scene's name-sorted frames) of item ``index``; reference first."""
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} out of range (dataset has {len(self)})")
        s, draw = divmod(index, self.samples_per_scene)
        return draw_frame_set(
            self.frame_counts[s], self.frames_per_sample, self.seed, self.epoch, self.names[s], draw
        )

    def __getitem__(self, index: int) -> SceneSample:
        idx = self.frame_indices(index)
        scene = self._scene(index // self.samples_per_scene)
        frames = [scene.frames[i] for i in idx]
        check_frame_images(scene, frames, mismatch_hint(scene.name))
        return load_sample(
            scene, frames, image_size=self.image_size, mode=self.mode, depth=self.depth, cache=self.cache
        )

    def _scene(self, s: int) -> Eth3dScene:
        scene = self._scenes.get(s)
        if scene is None:
            scene = self._scenes[s] = open_scene(self.scene_dirs[s])
        return scene

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_scenes"] = {}  # each process re-opens what it reads
        return state


def collate_samples(batch: list[SceneSample]) -> dict[str, Any]:
    """Stack samples into ``[B, S, ...]`` tensors (``DataLoader(collate_fn=collate_samples)``).

    ``scene`` and ``frames`` become lists; all samples must have the same frame count and image size
    (one ``image_size`` and scenes of one aspect ratio, or ``batch_size=1``).

    Raises:
        InputError: Samples of different shapes.
    """
    if not batch:
        raise InputError("empty batch", "use a DataLoader over a non-empty SceneDataset")
    shapes = {(len(b), None if b.images is None else b.images.shape) for b in batch}
    if len(shapes) > 1:
        raise InputError(
            f"cannot stack samples of different shapes {sorted(shapes, key=str)}",
            "use batch_size=1, or scenes of one image size and aspect ratio",
        )
    out: dict[str, Any] = {"scene": [b.scene for b in batch], "frames": [list(b.frames) for b in batch]}
    for name in ("images", "depth", "valid", "intrinsics", "extrinsics"):
        values = [getattr(b, name) for b in batch]
        if all(v is not None for v in values):
            out[name] = torch.from_numpy(np.stack(values))
    return out
