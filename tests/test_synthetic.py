"""The synthetic ETH3D scene generator: exact layout, exact ground truth, determinism, archives."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import py7zr
import pytest
from PIL import Image as PILImage

from vggtctl.data import camera_models
from vggtctl.errors import UsageError
from vggtctl.io.colmap import read_model_text
from vggtctl.services import synthetic
from vggtctl.services.synthetic import generate_scenes


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_exact_eth3d_layout(synthetic_root: Path) -> None:
    scene = synthetic_root / "synth_000"
    names = set(_files(scene))
    for k in range(6):
        assert f"images/dslr_images_undistorted/DSC_{k:04d}.JPG" in names
        assert f"images/dslr_images/DSC_{k:04d}.JPG" in names
        assert f"ground_truth_depth/dslr_images/DSC_{k:04d}.JPG" in names
    for calib in ("dslr_calibration_undistorted", "dslr_calibration_jpg"):
        assert {f"{calib}/cameras.txt", f"{calib}/images.txt", f"{calib}/points3D.txt"} <= names
    assert {
        "dslr_scan_eval/scan1.ply",
        "dslr_scan_eval/scan2.ply",
        "dslr_scan_eval/scan_alignment.mlp",
    } <= names
    assert any(n.startswith("masks_for_images/dslr_images/DSC_") and n.endswith(".png") for n in names)
    und, images, _ = read_model_text(scene / "dslr_calibration_undistorted")
    dist, dimages, _ = read_model_text(scene / "dslr_calibration_jpg")
    assert {c.model for c in und.values()} == {"PINHOLE"} and {c.model for c in dist.values()} == {
        "THIN_PRISM_FISHEYE"
    }
    assert sorted(und) == [0, 1]  # ETH3D camera ids start at 0
    assert (und[0].width, und[0].height) == (320, 213) and (dist[0].width, dist[0].height) == (312, 208)
    # images.txt has empty POINTS2D lines, exactly as the reader must handle
    lines = (scene / "dslr_calibration_undistorted" / "images.txt").read_text().split("\n")
    data = [ln for ln in lines if not ln.startswith("#")]
    assert data[1] == "" and len(images) == 6
    for iid, im in images.items():
        assert np.allclose(dimages[iid].qvec, im.qvec) and np.allclose(dimages[iid].tvec, im.tvec)
        with PILImage.open(scene / "images" / im.name) as jpg:
            assert jpg.size == (320, 213) and jpg.format == "JPEG"


def test_distorted_depth_is_exact_and_masked(synthetic_root: Path) -> None:
    scene = synthetic_root / "synth_000"
    spec = synthetic.build_scene(np.random.default_rng([0, 0]))
    dist, dimages, _ = read_model_text(scene / "dslr_calibration_jpg")
    for k, (_iid, im) in enumerate(sorted(dimages.items())):
        cam = dist[im.camera_id]
        stem = im.name.split("/")[-1]
        depth = np.fromfile(scene / "ground_truth_depth" / "dslr_images" / stem, "<f4")
        assert depth.size == cam.width * cam.height
        depth = depth.reshape(cam.height, cam.width)
        mask_path = scene / "masks_for_images" / "dslr_images" / stem.replace(".JPG", ".png")
        mask = np.asarray(PILImage.open(mask_path)) if mask_path.exists() else np.zeros_like(depth, np.uint8)
        assert set(np.unique(mask)) <= {0, 1, 2}
        assert np.isinf(depth[mask == 2]).all()
        assert (mask == 2).any() == (k % 2 == 1)  # the passer-by walks through every other view
        # unproject every valid depth through the full THIN_PRISM_FISHEYE model: on a scene surface
        ok = np.isfinite(depth)
        assert 0.4 < ok.mean() < 0.95
        n = camera_models.cam_from_img(cam, camera_models.pixel_centers(cam.width, cam.height)[ok])
        X_cam = np.concatenate([n, np.ones((len(n), 1))], axis=1) * depth[ok][:, None]
        R = im.rotation()
        X = (X_cam - im.tvec) @ R  # R^T (X_cam - t)
        on = np.abs(X[:, 2]) < 1e-4
        for box in spec.boxes:
            inside = np.all((X >= box.lo - 1e-4) & (X <= box.hi + 1e-4), axis=1)
            on |= inside & np.any((np.abs(X - box.lo) < 1e-4) | (np.abs(X - box.hi) < 1e-4), axis=1)
        assert on.mean() == 1.0


def test_seeded_byte_identical_and_archives(tmp_path: Path) -> None:
    a = generate_scenes(tmp_path / "a", scenes=1, views=2, seed=3, width=48, height=32, archives=True)
    b = generate_scenes(tmp_path / "b", scenes=1, views=2, seed=3, width=48, height=32)
    c = generate_scenes(tmp_path / "c", scenes=1, views=1, seed=4, width=48, height=32)
    assert [p.name for p in a] == ["synth_000"]
    assert _files(a[0]) == _files(b[0])
    assert (
        _files(a[0])["ground_truth_depth/dslr_images/DSC_0000.JPG"]
        != _files(c[0])["ground_truth_depth/dslr_images/DSC_0000.JPG"]
    )
    arch = tmp_path / "a" / "archives"
    manifest = json.loads((arch / "manifest.json").read_text())
    kinds = {"undistorted", "jpg", "depth", "occlusion", "scan_eval"}
    assert set(manifest) == {f"synth_000_dslr_{k}.7z" for k in kinds}
    extracted: dict[str, bytes] = {}
    for name, entry in manifest.items():
        data = (arch / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        with py7zr.SevenZipFile(arch / name) as z:
            files = [i.filename for i in z.list() if not i.is_directory]
            assert all(f.startswith("synth_000/") for f in files)
            z.extractall(tmp_path / "x")
    extracted = _files(tmp_path / "x" / "synth_000")
    assert extracted == _files(a[0])  # the five kinds together are the whole scene
    assert not list((tmp_path / "a").glob(".synth_*"))  # no temporary folders left


def test_rejects_degenerate_sizes(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="at least 16x16"):
        generate_scenes(tmp_path, scenes=1, views=1, width=8, height=8)
    with pytest.raises(UsageError) as e:
        generate_scenes(tmp_path / "new", scenes=0, views=0, seed=-5)
    assert str(e.value) == (
        "invalid synthetic scene settings: scenes=0 (at least 1 scene); views=0 (at least 1 view per scene); "
        "seed=-5 (a seed is a non-negative integer)"
    )
    assert not (tmp_path / "new").exists()  # refused before the folder is created


def test_archives_and_manifest_are_byte_identical_across_runs(tmp_path: Path) -> None:
    # The 7z members used to carry the files' ctime/mtime/atime, so every run hashed differently.
    a = tmp_path / "a"
    b = tmp_path / "b"
    generate_scenes(a, scenes=1, views=2, seed=3, width=48, height=32, archives=True)
    time.sleep(1.1)  # 7z timestamps have 100 ns resolution; a second apart is different for sure
    generate_scenes(b, scenes=1, views=2, seed=3, width=48, height=32, archives=True)
    names = sorted(p.name for p in (a / "archives").iterdir())
    assert len(names) == 6 and "manifest.json" in names
    for name in names:
        assert (a / "archives" / name).read_bytes() == (b / "archives" / name).read_bytes(), name
    with py7zr.SevenZipFile(a / "archives" / "synth_000_dslr_jpg.7z") as z:
        times = {i.creationtime.isoformat() for i in z.list()}
    assert times == {"2020-01-01T00:00:00+00:00"}
