"""Calibration data (scenes of an ETH3D root or any image folder) and activation-range collection.

A *scene* is a folder that directly holds images; ``samples`` scenes x ``frames`` frames are used,
each scene as one forward pass (VGGT's global attention mixes the frames of one scene, so frames of
different scenes never share a pass). Scenes are taken in name order after a seeded shuffle and
frames evenly spaced in name order: the same folder and seed give the same set, whose sha256 (of
the files' bytes, in order) goes into ``quantization.json``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vggtctl.errors import InputError, UsageError
from vggtctl.progress import NULL_PROGRESS, Progress

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp")
# ETH3D folders whose files are not photos (raw float depth maps named *.JPG, masks).
NOT_PHOTOS = frozenset({"ground_truth_depth", "ground_truth_masks", "masks_for_images"})


@dataclass(frozen=True)
class CalibrationSet:
    """The frames chosen for calibration (or the held-out comparison), one list per scene."""

    root: str
    scenes: tuple[tuple[str, ...], ...]
    sha256: str

    @property
    def files(self) -> list[str]:
        return [f for scene in self.scenes for f in scene]

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "scenes": [list(s) for s in self.scenes], "sha256": self.sha256}


def image_folders(root: Path) -> list[Path]:
    """Folders under ``root`` (itself included) that directly hold at least one image, by name.

    In an ETH3D scene only ``images/dslr_images_undistorted`` counts (what ``infer``/``evaluate``
    read): the distorted originals and the depth/mask folders are skipped.
    """
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        skip = set(NOT_PHOTOS)
        if "dslr_images_undistorted" in dirnames:
            skip.add("dslr_images")
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in skip)
        if any(f.lower().endswith(IMAGE_SUFFIXES) for f in filenames):
            out.append(Path(dirpath))
    return sorted(out)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))


def _spaced(items: Sequence[Path], n: int) -> list[Path]:
    if len(items) <= n:
        return list(items)
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in idx]


def choose_frames(
    root: str | os.PathLike[str],
    samples: int,
    frames: int,
    seed: int = 0,
    exclude: Sequence[str] = (),
    what: str = "calibration",
) -> CalibrationSet:
    """``samples`` scenes x up to ``frames`` frames from ``root``, deterministic for ``seed``.

    Args:
        root: ETH3D root or any folder of images (nested folders are scenes).
        samples: Scenes wanted.
        frames: Frames per scene.
        seed: Shuffles the scene order.
        exclude: Files not to use (the calibration frames, for a held-out set).
        what: ``calibration`` or ``comparison``, for messages.

    Raises:
        InputError: No images, or fewer scenes than ``samples``.
    """
    base = Path(root)
    skip = {os.path.abspath(f) for f in exclude}
    folders = []
    for folder in image_folders(base):
        files = [p for p in _images(folder) if os.path.abspath(p) not in skip]
        if files:
            folders.append((folder, files))
    if not folders:
        raise InputError(
            f"no {what} images in {base} (looked for {', '.join(IMAGE_SUFFIXES)} in it and its subfolders)",
            "pass an ETH3D root or a folder of images, e.g. `vggtctl download eth3d --synthetic --out demo_data`",
        )
    if len(folders) < samples:
        raise InputError(
            f"too few {what} samples: {samples} scenes asked for, {base} has {len(folders)} usable "
            "image folder(s)",
            f"lower --calibration-samples to {len(folders)} or add scenes",
        )
    order = np.random.default_rng(seed).permutation(len(folders))[:samples]
    chosen = [folders[i] for i in sorted(order)]
    scenes = tuple(tuple(str(p) for p in _spaced(files, frames)) for _, files in chosen)
    digest = hashlib.sha256()
    for scene in scenes:
        for f in scene:
            digest.update(Path(f).name.encode() + b"\0")
            digest.update(Path(f).read_bytes())
    return CalibrationSet(str(base), scenes, digest.hexdigest())


def load_scene(files: Sequence[str], image_size: int) -> np.ndarray:
    """``[S,3,H,W]`` float32 frames, preprocessed as ``vggtctl infer`` does (crop mode)."""
    from vggtctl.data.preprocess import load_images

    images, _ = load_images(list(files), "crop", image_size)
    return images


# ---------------------------------------------------------------- activation ranges


@dataclass
class _TokenLayout:
    """Tokens per frame and how many lead each frame (camera + registers) in the current pass."""

    per_frame: int = 0
    special: int = 0


@dataclass
class RangeCollector:
    """Forward pre-hooks feeding each layer's input (rotated if the layer is) to its observer."""

    observers: dict[str, Any]
    patch_only: dict[str, bool]
    rotate_block: dict[str, int]
    layout: _TokenLayout = field(default_factory=_TokenLayout)

    def hook(self, name: str) -> Callable[..., None]:
        from .hadamard import fwht

        def pre(_module: Any, args: tuple[Any, ...]) -> None:
            x = args[0]
            if self.rotate_block.get(name, 1) > 1:
                x = fwht(x, self.rotate_block[name])
            if self.patch_only[name] and x.ndim == 3 and self.layout.per_frame:
                idx = np.arange(x.shape[1]) % self.layout.per_frame
                keep = np.nonzero(idx >= self.layout.special)[0]
                import torch

                x = x[:, torch.as_tensor(keep)]
            self.observers[name].observe(x)

        return pre


@contextmanager
def collecting(model: Any, collector: RangeCollector) -> Iterator[RangeCollector]:
    """Attach the collector's hooks for the ``with`` block; always removed afterwards."""
    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_pre_hook(collector.hook(n)) for n in collector.observers]
    try:
        yield collector
    finally:
        for h in handles:
            h.remove()


def calibrate(
    model: Any,
    collector: RangeCollector,
    calibration: CalibrationSet,
    device: str,
    progress: Progress = NULL_PROGRESS,
) -> dict[str, float]:
    """Run every calibration scene through ``model`` and return each observed layer's scale.

    Raises:
        UsageError: A scene whose frames are not a multiple of the patch size after preprocessing.
    """
    import torch

    size = int(model.config.img_size)
    patch = int(model.config.patch_size)
    task = progress.task("calibrating", total=len(calibration.scenes), unit="scene")
    try:
        with collecting(model, collector), torch.inference_mode():
            for files in calibration.scenes:
                images = torch.from_numpy(load_scene(files, size)).to(device)
                h, w = images.shape[-2] // patch, images.shape[-1] // patch
                if h * w == 0:
                    raise UsageError(f"calibration frames {files[0]} are too small", "use larger images")
                collector.layout.special = int(model.aggregator.patch_start_idx)
                collector.layout.per_frame = collector.layout.special + h * w
                model(images)
                task.advance()
    finally:
        task.close()
    return {name: obs.scale() for name, obs in collector.observers.items() if obs.count}
