"""Which frames of a scene a sample uses: planned (evaluate) or drawn (training), then checked."""

from __future__ import annotations

import zlib
from typing import Any, Protocol

import numpy as np

from vggtctl.errors import InputError


class FramePlan(Protocol):
    """What frame planning reads from a config (``EvalConfig`` has these fields)."""

    frames: int | None
    stride: int
    sample: str
    seed: int


def scene_seed(scene: str) -> int:
    """A stable per-scene number (crc32 of the name), so draws do not depend on the other scenes."""
    return zlib.crc32(scene.encode())


def select_frame_indices(n: int, config: FramePlan, scene: str) -> list[int]:
    """Indices (sorted) of the frames to evaluate out of ``n`` name-sorted frames.

    ``stride``: every ``stride``-th frame from the first, then the first ``frames`` of those.
    ``random``: ``frames`` distinct frames drawn with a generator seeded by ``(seed, crc32(scene))``, so a
    scene gets the same frames whichever other scenes are evaluated.
    """
    if config.sample == "random":
        k = min(config.frames or n, n)
        rng = np.random.default_rng([config.seed, scene_seed(scene)])
        return sorted(int(i) for i in rng.choice(n, size=k, replace=False))
    idx = list(range(0, n, config.stride))
    return idx[: config.frames] if config.frames is not None else idx


def draw_frame_set(n: int, k: int, seed: int, epoch: int, scene: str, draw: int) -> list[int]:
    """``k`` distinct frame indices of ``n``, the first one the reference, the rest in drawn order.

    The generator is seeded by ``(seed, epoch, crc32(scene), draw)`` only: the same set comes back in
    every run and in every ``DataLoader`` worker, whichever process draws it.
    """
    rng = np.random.default_rng([seed, epoch, scene_seed(scene), draw])
    return [int(i) for i in rng.choice(n, size=k, replace=False)]


def check_frame_images(scene: Any, frames: list[Any], hint: str) -> None:
    """Every frame's image exists, is readable and has the size its calibration says (headers only).

    Raises:
        InputError: A missing or unreadable image, or one whose size differs from its calibration.
    """
    from PIL import Image, UnidentifiedImageError

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


def mismatch_hint(scene: str) -> str:
    return (
        "the images and the calibration come from different downloads; "
        f"vggtctl download eth3d --scenes {scene} --kinds undistorted"
    )


def plan_frames(scene: Any, config: FramePlan) -> list[Any]:
    """The frames of ``scene`` to run the model on, after checking their image files.

    Raises:
        InputError: Fewer than 2 frames, or an image that is missing or whose size differs from its
            calibration (images and calibration from different downloads).
    """
    frames = [scene.frames[i] for i in select_frame_indices(len(scene.frames), config, scene.name)]
    if len(frames) < 2:
        raise InputError(
            f"scene {scene.name}: {len(frames)} frame(s) selected of {len(scene.frames)}, need at least 2",
            "lower --stride or raise --frames",
        )
    check_frame_images(scene, frames, mismatch_hint(scene.name))
    return frames
