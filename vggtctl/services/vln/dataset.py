"""The training input pipeline: records -> tokenised samples with both encoders' pixels -> padded batches.

Work per sample (in DataLoader workers): decode + resize each frame once (:class:`FrameCache`), Qwen's
image processor on the cropped frames (``do_rescale=False``, ``do_resize=False``: the pixels are already
in [0, 1] at the right size), the prompt with each image's token count, labels on the answer only.
The loader has workers, pinned memory, prefetching and persistent workers; the training loop times how
long it waits for each batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vggtctl.errors import InputError
from vggtctl.services.vln.frames import FrameCache, qwen_crop
from vggtctl.services.vln.prompt import IGNORE, encode_sample
from vggtctl.services.vln.records import Record


@dataclass
class VlnSample:
    """One tokenised sample.

    Attributes:
        id: The record id.
        input_ids: ``[L]`` prompt + answer.
        labels: ``[L]``, ``IGNORE`` except on the answer.
        pixel_values: Qwen's patches of every image, ``[sum(t·h·w), 3·2·14·14]``.
        image_grid_thw: ``[n_images, 3]``.
        frames: VGGT's input, ``[n_images, 3, H, W]`` in [0, 1] (history first, current last).
        image_paths: The frame files (they key the feature cache).
    """

    id: str
    input_ids: torch.Tensor
    labels: torch.Tensor
    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor
    frames: torch.Tensor
    image_paths: tuple[str, ...]


class VlnDataset(Dataset):
    """Records as :class:`VlnSample` (see the module doc).

    Args:
        records: The samples.
        tokenizer: The LLM's tokenizer (with Qwen's special tokens).
        image_processor: Qwen's image processor.
        image_width: Width of the shared preprocessing (644 by default).
        merge: Qwen's spatial merge size (tokens per image = t·h·w / merge²).
    """

    def __init__(
        self,
        records: Sequence[Record],
        tokenizer: Any,
        image_processor: Any,
        image_width: int,
        merge: int = 2,
    ) -> None:
        self.records = list(records)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.merge = merge
        self.frames = FrameCache(image_width)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> VlnSample:
        record = self.records[index]
        frames = [self.frames.get(p) for p in record.images]
        if len({f.shape for f in frames}) > 1:
            raise InputError(
                f"sample {record.id}: its frames have different sizes {sorted({f.shape[1:] for f in frames})}",
                "render every frame of an episode at one resolution",
            )
        qwen = self.image_processor(
            images=[torch.from_numpy(np.ascontiguousarray(qwen_crop(f))) for f in frames],
            do_rescale=False,
            do_resize=False,
            return_tensors="pt",
        )
        grid = qwen["image_grid_thw"]
        tokens = [int(n) for n in (grid.prod(-1) // self.merge**2)]
        ids, labels = encode_sample(self.tokenizer, record.human, record.answer, tokens)
        return VlnSample(
            id=record.id,
            input_ids=torch.tensor(ids, dtype=torch.long),
            labels=torch.tensor(labels, dtype=torch.long),
            pixel_values=qwen["pixel_values"],
            image_grid_thw=grid,
            frames=torch.from_numpy(np.stack(frames)),
            image_paths=tuple(str(p) for p in record.images),
        )


@dataclass
class VlnBatch:
    """Samples padded on the right into one batch; ``frames`` stays one tensor per sample."""

    ids: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor
    images_per_sample: list[int]
    frames: list[torch.Tensor]
    image_paths: list[tuple[str, ...]]

    def __len__(self) -> int:
        return len(self.ids)

    def pin_memory(self) -> VlnBatch:
        """Called by the DataLoader's pin-memory thread (``pin_memory=True``)."""
        for name in ("input_ids", "attention_mask", "labels", "pixel_values", "image_grid_thw"):
            setattr(self, name, getattr(self, name).pin_memory())
        self.frames = [f.pin_memory() for f in self.frames]
        return self

    def to(self, device: torch.device | str) -> VlnBatch:
        """The tensors on ``device`` (non-blocking: they are pinned when the loader pins)."""
        move = {"non_blocking": True}
        for name in ("input_ids", "attention_mask", "labels", "pixel_values", "image_grid_thw"):
            setattr(self, name, getattr(self, name).to(device, **move))
        self.frames = [f.to(device, **move) for f in self.frames]
        return self


def collate(samples: Sequence[VlnSample], pad_id: int) -> VlnBatch:
    """Right-pad ids with ``pad_id`` (labels with ``IGNORE``, mask 0) and concatenate the image tensors."""
    length = max(len(s.input_ids) for s in samples)
    n = len(samples)
    input_ids = torch.full((n, length), pad_id, dtype=torch.long)
    labels = torch.full((n, length), IGNORE, dtype=torch.long)
    mask = torch.zeros((n, length), dtype=torch.long)
    for i, s in enumerate(samples):
        k = len(s.input_ids)
        input_ids[i, :k] = s.input_ids
        labels[i, :k] = s.labels
        mask[i, :k] = 1
    return VlnBatch(
        ids=[s.id for s in samples],
        input_ids=input_ids,
        attention_mask=mask,
        labels=labels,
        pixel_values=torch.cat([s.pixel_values for s in samples]),
        image_grid_thw=torch.cat([s.image_grid_thw for s in samples]),
        images_per_sample=[len(s.image_grid_thw) for s in samples],
        frames=[s.frames for s in samples],
        image_paths=[s.image_paths for s in samples],
    )


class EpochSampler(Sampler[int]):
    """This rank's share of a seeded permutation of the data, per epoch, from a given position.

    Resume restarts the epoch's permutation at the sample where the checkpoint was taken, so a resumed
    run sees the same samples in the same order as an uninterrupted one.
    """

    def __init__(
        self,
        n: int,
        seed: int,
        epoch: int,
        start: int = 0,
        rank: int = 0,
        world: int = 1,
        shuffle: bool = True,
    ) -> None:
        g = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(n, generator=g).tolist() if shuffle else list(range(n))
        self.indices = order[rank::world][start:]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class _Collate:
    """Picklable collate function (workers need one)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, samples: Sequence[VlnSample]) -> VlnBatch:
        return collate(samples, self.pad_id)


def make_loader(
    dataset: VlnDataset,
    sampler: Sampler[int],
    *,
    batch_size: int,
    num_workers: int,
    pin_memory: bool,
    prefetch_factor: int,
    pad_id: int,
) -> DataLoader:
    """The DataLoader (workers, pinned memory and prefetch when workers > 0)."""
    extra: dict[str, Any] = {}
    if num_workers > 0:
        extra = {"prefetch_factor": prefetch_factor, "persistent_workers": False}
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory and torch.cuda.is_available(),
        collate_fn=_Collate(pad_id),
        drop_last=False,
        **extra,
    )
