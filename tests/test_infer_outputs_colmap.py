"""`vggtctl infer` on the tiny weights: original-resolution outputs, COLMAP tracks, `--bundle-adjust`, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pycolmap
import pytest
from PIL import Image

from tests.helpers_cli import run_cli
from vggtctl.io.image_geometry import intrinsics_to_original
from vggtctl.io.predictions import geometries_from_predictions, load_predictions
from vggtctl.services.bundle_adjust import reprojection_errors
from vggtctl.services.original_resolution import load_original_frame

SIZES = [(224, 168), (240, 168), (200, 150)]  # mixed sizes (one padded to the others), as users' folders are


def _images(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    for i, (w, h) in enumerate(SIZES):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"v{i}.png")
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("infer_colmap")
    images = _images(base / "images")
    out = base / "out"
    # Crop mode at the tiny model's 168 px makes 126-row frames: below the track head's 128 px minimum,
    # so --bundle-adjust must say so and keep the plain export.
    r = run_cli("infer", images, "--model", tiny_checkpoint, "--out", out, "--dtype", "fp32",
                "--resolution", "original", "--bundle-adjust", "--json")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    return {"result": json.loads(r.stdout), "out": out, "images": images, "stderr": r.stderr}


def test_original_resolution_files(run: dict[str, Any]) -> None:
    out = run["out"]
    p = load_predictions(out)
    geoms = geometries_from_predictions(p)
    assert run["result"]["resolution"] == "original" and run["result"]["files"]["original"] == str(
        out / "original"
    )
    for i, (w, h) in enumerate(SIZES):
        f = load_original_frame(out, i)
        assert f["depth"].shape == f["depth_conf"].shape == f["valid"].shape == (h, w)
        assert str(f["name"]) == f"v{i}.png"
        np.testing.assert_allclose(f["intrinsic"], intrinsics_to_original(p["intrinsic"][i], geoms[i]))
        np.testing.assert_array_equal(f["extrinsic"], p["extrinsic"][i])
        assert np.isfinite(f["depth"][f["valid"]]).all() and np.isnan(f["depth"][~f["valid"]]).all()
        # The portrait frame was centre-cropped (rows lost); the landscape ones were seen whole.
        assert f["valid"].all() == (h < w)
        # Depth values come from the model's map: same range, no rescaling.
        d = p["depth"][i][..., 0]
        assert d.min() - 1e-4 <= np.nanmin(f["depth"]) and np.nanmax(f["depth"]) <= d.max() + 1e-4
    meta = json.loads((out / "meta.json").read_text())
    assert meta["resolution"] == "original" and any(k.startswith("original/") for k in meta["outputs"])


def test_colmap_export_has_tracks_that_pycolmap_reads(run: dict[str, Any]) -> None:
    rec = pycolmap.Reconstruction(str(run["out"] / "colmap"))
    res = run["result"]
    assert rec.num_images() == 3 and rec.num_points3D() == res["points"]
    assert rec.compute_num_observations() == res["colmap_observations"] >= res["points"]
    for iid, image in rec.images.items():
        cam = rec.cameras[image.camera_id]
        assert (cam.width, cam.height) == SIZES[iid - 1]  # original pixels
    errors = reprojection_errors(rec)
    assert len(errors) == res["colmap_observations"] and errors.max() < 0.05  # original px, float32 points
    lengths = [p.track.length() for p in rec.points3D.values()]
    assert min(lengths) >= 1 and max(lengths) <= 3


def test_bundle_adjust_without_usable_tracks_keeps_the_plain_export(run: dict[str, Any]) -> None:
    ba = run["result"]["bundle_adjustment"]
    assert ba["refined"] is False and "smaller than the track head's 128 px minimum side" in ba["reason"]
    meta = json.loads((run["out"] / "meta.json").read_text())
    assert meta["bundle_adjustment"] == ba
    assert pycolmap.Reconstruction(str(run["out"] / "colmap")).num_points3D() == run["result"]["points"]


@pytest.mark.slow
def test_bundle_adjust_with_track_head_observations(tmp_path: Path, tiny_checkpoint: Path) -> None:
    images = _images(tmp_path / "images")
    out = tmp_path / "out"
    r = run_cli("infer", images, "--model", tiny_checkpoint, "--out", out, "--dtype", "fp32", "--mode", "pad",
                "--format", "colmap", "--bundle-adjust", "--ba-queries", "24", "--ba-min-observations", "1",
                "--json")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    ba = json.loads(r.stdout)["bundle_adjustment"]
    assert "[track]" in r.stderr and ba["images"] == 3 and ba["error_before_px"] is not None
    assert json.loads((out / "meta.json").read_text())["bundle_adjustment"] == ba
    rec = pycolmap.Reconstruction(str(out / "colmap"))
    if ba["refined"]:
        # The model on disk is the refined track-head model, with the error the report gives.
        assert ba["error_after_px"] < ba["error_before_px"]
        assert rec.num_points3D() == ba["points"]
        assert np.mean(reprojection_errors(rec)) == pytest.approx(ba["error_after_px"], rel=1e-6)
    else:
        # Not kept: the folder holds the plain export and the report says why.
        assert "kept" in ba["reason"] and rec.num_points3D() == json.loads(r.stdout)["points"]


def test_unreadable_images_are_listed_by_name_before_the_model_loads(tmp_path: Path) -> None:
    images = _images(tmp_path / "images")
    (images / "empty.png").write_bytes(b"")
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    r = run_cli("infer", images, "--model", tmp_path / "no-such-weights.safetensors", "--out", tmp_path / "o")
    assert r.exit_code == 1
    assert "2 of 5 images cannot be read" in r.stderr
    assert "empty.png (empty file, 0 bytes)" in r.stderr and "broken.jpg (" in r.stderr
    assert "no-such-weights" not in r.stderr  # the model was never looked at
    assert not (tmp_path / "o").exists()


def test_a_threshold_that_keeps_nothing_is_an_error_naming_the_range(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    images = _images(tmp_path / "images")
    r = run_cli("infer", images, "--model", tiny_checkpoint, "--out", tmp_path / "o", "--dtype", "fp32",
                "--format", "ply", "--conf-threshold", "1e9")  # fmt: skip
    assert r.exit_code == 2
    assert "confidence threshold 1e+09 keeps no point: the depth confidences range from" in r.stderr
    assert "Hint:" in r.stderr and not (tmp_path / "o").exists()


def test_bundle_adjust_needs_the_colmap_output(tmp_path: Path) -> None:
    images = _images(tmp_path / "images")
    r = run_cli("infer", images, "--format", "ply", "--bundle-adjust", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "--bundle-adjust" in r.stderr and "colmap" in r.stderr
