"""Ground-truth depth on the model grid (vggtctl.data.depth): equal to the old lookup-table path, bounded."""

from __future__ import annotations

import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from tests.legacy_gt_depth import legacy_gt_depth, legacy_model_grid_depth
from vggtctl.data import depth as data_depth
from vggtctl.data.depth import model_grid_depth, undistorted_depth
from vggtctl.data.eth3d import open_scene
from vggtctl.data.preprocess import ImageGeometry, load_images
from vggtctl.io.colmap import read_model_text, rotmat_to_qvec, write_model_text
from vggtctl.services.synthetic import generate_scenes

SETTINGS = (("crop", 518), ("pad", 518), ("crop", 140), ("pad", 154), ("crop", 224))


def _inputs(scene, frame):  # noqa: ANN001, ANN202
    cam_d, ext_d = scene.distorted_camera(frame)
    return (
        scene.raw_depth(frame),
        scene.mask(frame),
        scene.cameras[frame.camera_id],
        frame.extrinsic,
        cam_d,
        ext_d,
    )


def test_synthetic_scenes_use_thin_prism_fisheye(synthetic_root: Path) -> None:
    scene = open_scene(synthetic_root / "synth_000")
    cam_d, _ = scene.distorted_camera(scene.frames[0])
    assert cam_d.model == "THIN_PRISM_FISHEYE"
    k1, k2, p1, p2, k3, k4, sx1, sy1 = cam_d.params[4:]
    assert k1 > 0.03 and all(v != 0 for v in (p1, p2, sx1, sy1))  # every distortion term is exercised


@pytest.mark.parametrize("scene_name", ["synth_000", "synth_001"])
def test_model_grid_depth_equals_the_old_reader_path(synthetic_root: Path, scene_name: str) -> None:
    scene = open_scene(synthetic_root / scene_name)
    for frame in scene.frames:
        inputs = _inputs(scene, frame)
        assert np.array_equal(undistorted_depth(*inputs), legacy_gt_depth(scene, frame))
        for mode, size in SETTINGS:
            _, (geom,) = load_images([frame.image_path], mode=mode, target_size=size)
            new = model_grid_depth(*inputs, geom)
            old = legacy_model_grid_depth(scene, frame, geom)
            assert new.shape == geom.out_hw and new.dtype == np.float32
            assert np.array_equal(new, old), (frame.name, mode, size)
            assert 0.3 < (new > 0).mean() < 0.95  # a real mix of valid and invalid pixels


def test_cropped_rows_and_rotated_distorted_pose_match_the_old_path(tmp_path: Path) -> None:
    # Portrait images lose rows to the crop; a distorted pose rotated 0.2 degrees against the undistorted
    # one exercises the relative rotation (identity on ETH3D and in the generator).
    (root,) = generate_scenes(tmp_path, scenes=1, views=2, seed=3, width=96, height=160)
    folder = root / "dslr_calibration_jpg"
    cams, images, points = read_model_text(folder)
    c, s = np.cos(np.deg2rad(0.2)), np.sin(np.deg2rad(0.2))
    tilt = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    for im in images.values():
        im.qvec = rotmat_to_qvec(tilt @ im.rotation())
        im.tvec = tilt @ im.tvec  # same centre: R' c + t' = tilt (R c + t) = 0
    write_model_text(folder, cams, images, points)
    scene = open_scene(root)
    for frame in scene.frames:
        _, (geom,) = load_images([frame.image_path], mode="crop", target_size=140)
        assert geom.offset_xy[1] < 0  # rows were cropped away
        new = model_grid_depth(*_inputs(scene, frame), geom)
        old = legacy_model_grid_depth(scene, frame, geom)
        assert (new > 0).mean() > 0.3
        # The rotation goes through a BLAS product over differently sized row blocks: equal to float32
        # rounding, and the validity mask identical.
        assert np.array_equal(new > 0, old > 0)
        np.testing.assert_allclose(new, old, rtol=1e-6, atol=0)


def test_result_does_not_depend_on_the_band_size(
    synthetic_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scene = open_scene(synthetic_root / "synth_000")
    frame = scene.frames[1]
    _, (geom,) = load_images([frame.image_path], mode="crop", target_size=140)
    whole = model_grid_depth(*_inputs(scene, frame), geom)
    monkeypatch.setattr(data_depth, "_BAND_SAMPLES", 1000)  # ~3 image rows per band
    assert np.array_equal(model_grid_depth(*_inputs(scene, frame), geom), whole)


def test_memory_stays_bounded_by_the_band_not_the_image(
    synthetic_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scene = open_scene(synthetic_root / "synth_000")
    frame = scene.frames[0]
    inputs = _inputs(scene, frame)
    _, (geom,) = load_images([frame.image_path], mode="crop", target_size=140)
    monkeypatch.setattr(data_depth, "_BAND_SAMPLES", 320 * 8)
    monkeypatch.setattr(data_depth, "_GRID_BLOCK_PIXELS", 320 * 8)
    monkeypatch.setattr(data_depth, "GRID_CACHE_BYTES", 0)  # nothing kept between frames either

    def peak(fn) -> int:  # noqa: ANN001
        tracemalloc.start()
        fn()
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    old = peak(lambda: legacy_model_grid_depth(scene, frame, geom))
    new = peak(lambda: model_grid_depth(*inputs, geom))
    pixels = inputs[2].width * inputs[2].height
    # the old path holds ~36 bytes of maps per undistorted pixel plus whole-image temporaries
    assert old > 60 * pixels
    assert new < old / 4


def test_resample_depth_is_model_grid_pooling_of_a_full_image() -> None:
    # the public whole-image resampler and the banded pooling share one rule
    rng = np.random.default_rng(0)
    d = rng.uniform(1, 5, (37, 53)).astype(np.float32)
    d[rng.random(d.shape) < 0.3] = np.inf
    geom = ImageGeometry((37, 53), (24, 34), (0, -3), (18, 34))
    pool = data_depth._Pooling(geom)
    for r0, r1 in pool.bands(4):
        pool.add_rows(r0, d[r0:r1])
    assert np.array_equal(pool.result(), data_depth.resample_depth(d, geom))


def test_gt_depth_of_the_reader_has_no_per_camera_tables(synthetic_root: Path, tmp_path: Path) -> None:
    shutil.copytree(synthetic_root / "synth_000", tmp_path / "synth_000")
    scene = open_scene(tmp_path / "synth_000")
    scene.gt_depth(scene.frames[0])
    assert not [k for k, v in vars(scene).items() if isinstance(v, dict) and k.endswith("_cache")]
