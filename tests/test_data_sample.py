"""SceneSample (vggtctl.data.sample) and the ground-truth depth disk cache (vggtctl.data.cache)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.legacy_gt_depth import legacy_model_grid_depth
from vggtctl.data import sample as data_sample
from vggtctl.data.cache import DepthCache
from vggtctl.data.eth3d import open_scene
from vggtctl.data.preprocess import intrinsics_to_model, load_images
from vggtctl.data.sample import SceneSample, frame_depth, load_sample
from vggtctl.errors import InputError


def test_load_sample_holds_what_the_model_sees_and_the_ground_truth(
    synthetic_root: Path, tmp_path: Path
) -> None:
    scene = open_scene(synthetic_root / "synth_001")
    chosen = [scene.frames[i] for i in (4, 1, 2)]
    sample = load_sample(scene, [4, "DSC_0001.JPG", chosen[2]], image_size=224, cache=tmp_path / "c")
    assert isinstance(sample, SceneSample) and len(sample) == 3
    assert sample.scene == "synth_001" and sample.frames == [f.name for f in chosen]
    images, geoms = load_images([f.image_path for f in chosen], target_size=224)
    assert np.array_equal(sample.images, images) and sample.geometries == geoms
    assert sample.images.shape == (3, 3, 154, 224) and sample.depth.shape == (3, 154, 224)
    for k, (f, g) in enumerate(zip(chosen, geoms, strict=True)):
        assert np.array_equal(sample.depth[k], legacy_model_grid_depth(scene, f, g))
        np.testing.assert_array_equal(sample.intrinsics[k], intrinsics_to_model(f.K, g))
        np.testing.assert_array_equal(sample.extrinsics[k], f.extrinsic)
    assert np.array_equal(sample.valid, sample.depth > 0) and 0.3 < sample.valid.mean() < 0.95
    # the synthetic principal point is within a few pixels of the image centre, in model pixels too
    k = sample.intrinsics[0]
    assert k[0, 2] == pytest.approx(112, abs=3) and k[1, 2] == pytest.approx(77, abs=3)
    tensors = sample.to_torch()
    assert (
        tuple(tensors["images"].shape) == (3, 3, 154, 224)
        and tensors["valid"].dtype.is_floating_point is False
    )
    # without depth (a scene lacking the depth kind, or saved predictions)
    bare = load_sample(synthetic_root / "synth_001", [0, 1], depth=False)
    assert bare.depth is None and bare.valid is None and bare.images.shape[0] == 2


def test_load_sample_names_bad_frames(synthetic_root: Path) -> None:
    with pytest.raises(InputError, match="frame index 9 out of range"):
        load_sample(synthetic_root / "synth_000", [0, 9], cache=False)
    with pytest.raises(InputError, match="no image named 'DSC_0042.JPG'"):
        load_sample(synthetic_root / "synth_000", ["DSC_0042.JPG"], cache=False)


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = data_sample.model_grid_depth

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(kwargs.get("what", "?"))
        return real(*args, **kwargs)

    monkeypatch.setattr(data_sample, "model_grid_depth", counting)
    return calls


def test_disk_cache_is_content_keyed_and_never_trusts_a_corrupt_entry(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(synthetic_root / "synth_000", tmp_path / "synth_000")
    scene = open_scene(tmp_path / "synth_000")
    frame = scene.frames[2]
    _, (geom,) = load_images([frame.image_path], target_size=140)
    cache = DepthCache(tmp_path / "cache")
    calls = _spy(monkeypatch)
    cold = frame_depth(scene, frame, geom, cache)
    entries = list((tmp_path / "cache").rglob("*.gtd"))
    assert calls == [frame.name] and len(entries) == 1
    warm = frame_depth(scene, frame, geom, cache)
    assert calls == [frame.name] and np.array_equal(warm, cold)  # read back, not recomputed
    # another target geometry is another entry
    _, (geom2,) = load_images([frame.image_path], target_size=154)
    frame_depth(scene, frame, geom2, cache)
    assert len(calls) == 2 and len(list((tmp_path / "cache").rglob("*.gtd"))) == 2
    # a corrupt entry (one flipped payload byte, then a truncated one) is recomputed and rewritten
    data = bytearray(entries[0].read_bytes())
    data[-7] ^= 0x40
    entries[0].write_bytes(bytes(data))
    assert np.array_equal(frame_depth(scene, frame, geom, cache), cold) and len(calls) == 3
    entries[0].write_bytes(entries[0].read_bytes()[:100])
    assert np.array_equal(frame_depth(scene, frame, geom, cache), cold) and len(calls) == 4
    assert np.array_equal(frame_depth(scene, frame, geom, cache), cold) and len(calls) == 4  # healed
    # new source bytes (same size, same path) give a new key and the new truth
    raw = scene.depth_path(frame)
    depth = np.fromfile(raw, dtype="<f4")
    depth[np.isfinite(depth)] *= 2.0
    depth.tofile(raw)
    doubled = frame_depth(scene, frame, geom, cache)
    assert len(calls) == 5
    np.testing.assert_allclose(doubled[cold > 0], 2 * cold[cold > 0], rtol=1e-6)
    # an edited mask is a new key too
    mask = scene.mask_path(frame)
    if mask.is_file():
        mask.unlink()
        frame_depth(scene, frame, geom, cache)
        assert len(calls) == 6


def test_default_cache_lives_under_vggtctl_home(
    synthetic_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VGGTCTL_HOME", str(tmp_path / "home"))
    load_sample(synthetic_root / "synth_000", [0], image_size=140)
    assert len(list((tmp_path / "home" / "cache" / "gt_depth").rglob("*.gtd"))) == 1
    assert DepthCache.default().root == tmp_path / "home" / "cache" / "gt_depth"


def test_an_unwritable_cache_is_not_fatal(synthetic_root: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    sample = load_sample(synthetic_root / "synth_000", [0], image_size=140, cache=blocker / "cache")
    assert sample.valid.any()
