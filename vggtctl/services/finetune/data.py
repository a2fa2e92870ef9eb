"""Scenes, the train/validation split and the order samples are drawn in, for ``vggtctl finetune``.

The order is a pure function of (seed, epoch, rank, world size) and a cursor, so a resumed run continues
with exactly the samples it would have seen (the cursor is saved in every checkpoint), and a run on N
processes sees, step by step, the same global batch as one process with N times the batch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vggtctl.errors import Problem
from vggtctl.services.finetune.config import DataSettings, raise_problems


def scene_dirs(data: DataSettings) -> list[Path]:
    """The scene folders ``data`` selects (root, ``scenes``, ``subset``), checked for dense ground truth.

    Raises:
        ConfigError: No root, a root without scenes, unknown scene names, or scenes without depth (exit 2).
    """
    from vggtctl.data.eth3d import SUBSETS, list_scenes, open_scene

    problems: list[Problem] = []
    if data.root is None:
        raise_problems(
            "finetune data", [Problem.of("data.root", "is required (a folder of ETH3D-layout scenes)")]
        )
    root = Path(str(data.root))
    if not root.is_dir():
        raise_problems("finetune data", [Problem.of("data.root", "does not exist", str(root))])
    names = list_scenes(root)
    if not names:
        raise_problems("finetune data", [Problem.of("data.root", "holds no ETH3D-layout scenes", str(root))])
    wanted = list(data.scenes)
    if data.subset is not None:
        wanted += [s for s in SUBSETS.get(data.subset, ()) if s not in wanted]
    if wanted:
        missing = [s for s in wanted if s not in names]
        if missing and data.scenes:
            problems.append(
                Problem.of("data.scenes", f"not found under {root} (found: {', '.join(names)})", missing)
            )
        names = [s for s in names if s in wanted]
        if not names and not problems:
            problems.append(Problem.of("data.subset", f"none of its scenes are under {root}", data.subset))
    no_depth = []
    for name in names:
        scene = open_scene(root / name)
        if not (scene.has_depth() and scene.has_distorted_calibration()):
            no_depth.append(name)
        elif len(scene.frames) < data.max_img_per_gpu:
            problems.append(
                Problem.of(
                    "data.max_img_per_gpu",
                    f"scene {name} has only {len(scene.frames)} frames",
                    data.max_img_per_gpu,
                )
            )
    if no_depth:
        problems.append(
            Problem.of(
                "data.root",
                f"scene(s) {', '.join(no_depth)} have no dense ground-truth depth (dslr_depth + distorted calibration)",
                str(root),
            )
        )
    raise_problems(
        "finetune data",
        problems,
        "vggtctl download eth3d --subset facades --kinds depth,jpg (or --synthetic)",
    )
    return [root / n for n in names]


@dataclass
class Split:
    """Train and validation items: ``(dataset, item indices)`` each."""

    train: Any
    train_items: list[int]
    val: Any
    val_items: list[int]
    how: str


def make_split(data: DataSettings, dirs: list[Path]) -> Split:
    """Split by scene (with two or more scenes, unless ``split=frames``) or by frame set, seeded."""
    from vggtctl.data.dataset import SceneDataset

    def dataset(ds: list[Path]) -> SceneDataset:
        return SceneDataset(
            ds,
            data.max_img_per_gpu,
            samples_per_scene=data.samples_per_scene,
            seed=data.seed,
            image_size=data.image_size,
            mode=data.mode,
            cache=data.cache,
        )

    rng = random.Random(data.seed)
    by_scene = data.split == "scene" or (data.split == "auto" and len(dirs) >= 2)
    if by_scene and len(dirs) >= 2 and data.train_fraction < 1:
        order = list(dirs)
        rng.shuffle(order)
        n_val = min(len(order) - 1, max(1, round(len(order) * (1 - data.train_fraction))))
        val_dirs, train_dirs = sorted(order[:n_val]), sorted(order[n_val:])
        train, val = dataset(train_dirs), dataset(val_dirs)
        return Split(train, list(range(len(train))), val, list(range(len(val))), "scene")
    full = dataset(dirs)
    items = list(range(len(full)))
    rng.shuffle(items)
    n_train = max(1, round(len(items) * data.train_fraction))
    return Split(full, sorted(items[:n_train]), full, sorted(items[n_train:]), "frames")


class SampleStream:
    """Batches of item indices for one rank: epoch-seeded permutations, sharded like DistributedSampler.

    Global batch g of an epoch is permutation items ``[g·B·W, (g+1)·B·W)``; rank r takes every W-th of them,
    so W processes with batch B see what one process with batch B·W sees.
    """

    def __init__(self, items: list[int], seed: int, rank: int, world: int, batch: int) -> None:
        self.items, self.seed, self.rank, self.world, self.batch = list(items), seed, rank, world, batch
        self.epoch = 0
        self.cursor = 0  # global batches taken in this epoch
        if len(self.items) < batch * world:
            raise_problems(
                "finetune data",
                [
                    Problem.of(
                        "optimizer.batch_size",
                        f"x {world} process(es) needs {batch * world} training samples, only {len(self.items)} exist",
                        batch,
                    )
                ],
                "raise data.samples_per_scene or add scenes",
            )

    @property
    def batches_per_epoch(self) -> int:
        return len(self.items) // (self.batch * self.world)

    def _order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return [self.items[i] for i in torch.randperm(len(self.items), generator=g).tolist()]

    def next(self) -> tuple[int, list[int]]:
        """``(epoch, this rank's item indices)`` of the next global batch."""
        if self.cursor >= self.batches_per_epoch:
            self.epoch, self.cursor = self.epoch + 1, 0
        order = self._order(self.epoch)
        size = self.batch * self.world
        chunk = order[self.cursor * size : (self.cursor + 1) * size]
        self.cursor += 1
        return self.epoch, chunk[self.rank :: self.world]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])


def load_batch(dataset: Any, epoch: int, items: list[int]) -> dict[str, torch.Tensor]:
    """Stack the samples of ``items`` (drawn as in ``epoch``) into ``[B, S, ...]`` tensors."""
    from vggtctl.data.dataset import collate_samples

    dataset.set_epoch(epoch)
    return collate_samples([dataset[i] for i in items])


def augment(
    batch: dict[str, torch.Tensor], data: DataSettings, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Optional colour jitter (brightness, contrast) and aspect crop (width cut to a multiple of 14)."""
    out = dict(batch)
    images = batch["images"]
    if data.color_jitter > 0:
        b = images.shape[0]
        j = data.color_jitter
        bright = 1 + (torch.rand(b, 1, 1, 1, 1, generator=generator) * 2 - 1) * j
        contrast = 1 + (torch.rand(b, 1, 1, 1, 1, generator=generator) * 2 - 1) * j
        mean = images.mean(dim=(2, 3, 4), keepdim=True)
        images = ((images - mean) * contrast + mean) * bright
        out["images"] = images.clamp(0, 1)
    if data.aspect_crop > 0:
        w = images.shape[-1]
        cut = int(torch.rand((), generator=generator).item() * data.aspect_crop * w) // 14 * 14
        if cut >= 14:
            left = cut // 2 // 14 * 14
            keep = slice(left, w - (cut - left))
            out["images"] = out["images"][..., keep]
            out["depth"] = batch["depth"][..., keep]
            out["valid"] = batch["valid"][..., keep]
            intr = batch["intrinsics"].clone()
            intr[..., 0, 2] -= left
            out["intrinsics"] = intr
    return out


def rng_state() -> dict[str, Any]:
    """This process's random states, in plain types (``torch.load(weights_only=True)`` reads them)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2] or 0],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    internal, version = tuple(int(x) for x in py[:-2]), int(py[-2])
    random.setstate((version, internal, None))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np_state[1].numpy().astype(np.uint32), *np_state[2:]))
