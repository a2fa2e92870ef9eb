"""SceneDataset (vggtctl.data.dataset): seeded frame sets, reference first, real DataLoader workers, pickling."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vggtctl.data.dataset import SceneDataset, collate_samples
from vggtctl.data.eth3d import open_scene
from vggtctl.errors import InputError, UsageError


def _dataset(root: Path, cache: Path, **kw) -> SceneDataset:  # noqa: ANN003
    kw.setdefault("samples_per_scene", 3)
    kw.setdefault("seed", 7)
    return SceneDataset([root / "synth_000", root / "synth_001"], 3, image_size=140, cache=cache, **kw)


def test_draws_are_seeded_distinct_and_reference_first(synthetic_root: Path, tmp_path: Path) -> None:
    ds = _dataset(synthetic_root, tmp_path / "c")
    assert len(ds) == 6
    draws = [ds.frame_indices(i) for i in range(len(ds))]
    assert all(len(d) == 3 and len(set(d)) == 3 and all(0 <= i < 6 for i in d) for d in draws)
    assert draws == [_dataset(synthetic_root, tmp_path / "c").frame_indices(i) for i in range(6)]  # a new run
    assert len({tuple(d) for d in draws}) > 3 and len({d[0] for d in draws}) > 1  # references vary
    assert [_dataset(synthetic_root, tmp_path / "c", seed=8).frame_indices(i) for i in range(6)] != draws
    ds.set_epoch(1)
    assert [ds.frame_indices(i) for i in range(6)] != draws
    ds.set_epoch(0)
    item = ds[4]  # scene 1, draw 1
    scene = open_scene(synthetic_root / "synth_001")
    assert item.scene == "synth_001"
    assert item.frames == [scene.frames[i].name for i in draws[4]]
    assert item.frames[0] == scene.frames[draws[4][0]].name  # the reference leads
    # the first frame's extrinsic is its own calibration, not re-based: the model's job is to predict
    # the others relative to it
    np.testing.assert_array_equal(item.extrinsics[0], scene.frames[draws[4][0]].extrinsic)
    with pytest.raises(IndexError):
        ds[6]


def test_pickle_round_trip_gives_the_same_items(synthetic_root: Path, tmp_path: Path) -> None:
    ds = _dataset(synthetic_root, tmp_path / "c")
    first = ds[1]  # opens a scene inside the dataset
    blob = pickle.dumps(ds)
    assert len(blob) < 4000  # settings and paths only: no images, no model, no open scene
    again = pickle.loads(blob)[1]
    assert again.frames == first.frames
    for name in ("images", "depth", "valid", "intrinsics", "extrinsics"):
        assert np.array_equal(getattr(again, name), getattr(first, name))


def test_dataloader_with_two_workers_matches_the_dataset(synthetic_root: Path, tmp_path: Path) -> None:
    ds = _dataset(synthetic_root, tmp_path / "c", samples_per_scene=2)
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_samples)
    batches = list(loader)
    assert len(batches) == 2
    direct = [ds[i] for i in range(len(ds))]
    for b, batch in enumerate(batches):
        assert tuple(batch["images"].shape) == (2, 3, 3, 98, 140)
        assert batch["depth"].dtype == torch.float32 and batch["valid"].dtype == torch.bool
        assert tuple(batch["intrinsics"].shape) == (2, 3, 3, 3) and tuple(batch["extrinsics"].shape) == (
            2,
            3,
            3,
            4,
        )
        for k in range(2):
            ref = direct[2 * b + k]
            assert batch["scene"][k] == ref.scene and batch["frames"][k] == ref.frames
            assert torch.equal(batch["images"][k], torch.from_numpy(ref.images))
            assert torch.equal(batch["depth"][k], torch.from_numpy(ref.depth))
    # the workers filled the disk cache: one entry per distinct (frame, geometry)
    distinct = {(s, f) for i in range(len(ds)) for s, f in [(direct[i].scene, n) for n in direct[i].frames]}
    assert len(list((tmp_path / "c").rglob("*.gtd"))) == len(distinct)


def test_bad_settings_and_scenes_are_refused(synthetic_root: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError) as e:
        SceneDataset([synthetic_root / "synth_000"], 0, samples_per_scene=0, image_size=100, mode="zoom")
    for part in ("frames per sample 0", "samples per scene 0", "image size 100", "mode 'zoom'"):
        assert part in e.value.message
    with pytest.raises(InputError, match="has 6 frames, fewer than 7"):
        SceneDataset([synthetic_root / "synth_000"], 7)
    with pytest.raises(InputError, match="not an ETH3D scene folder"):
        SceneDataset([tmp_path], 2)
    with pytest.raises(InputError, match="cannot stack samples of different shapes"):
        a = SceneDataset([synthetic_root / "synth_000"], 2, image_size=140, cache=False)[0]
        b = SceneDataset([synthetic_root / "synth_000"], 3, image_size=140, cache=False)[0]
        collate_samples([a, b])
