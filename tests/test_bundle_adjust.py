"""Issue 19 §3: bundle adjustment through pycolmap recovers exact cameras; bad refinements are not kept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers_cli import run_cli
from vggtctl.errors import InputError, UsageError
from vggtctl.io.colmap import read_model
from vggtctl.services.bundle_adjust import BundleAdjustConfig, refine_model
from vggtctl.services.bundle_adjust_synthetic import perturbed, pose_errors, ring_scene, umeyama


def _extrinsics(folder: Path) -> np.ndarray:
    _, images, _ = read_model(folder)
    return np.stack([images[i].extrinsic() for i in sorted(images)])


def test_umeyama_recovers_a_known_similarity() -> None:
    rng = np.random.default_rng(3)
    src = rng.normal(size=(30, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    R = q * np.sign(np.linalg.det(q))
    s, R2, t = umeyama(src, 2.5 * src @ R.T + [1.0, -2.0, 0.5])
    assert s == pytest.approx(2.5) and np.allclose(R2, R) and np.allclose(t, [1.0, -2.0, 0.5])


@pytest.mark.parametrize("fmt", ["bin", "txt"])
def test_perturbed_cameras_are_recovered_up_to_the_gauge(tmp_path: Path, fmt: str) -> None:
    truth = ring_scene(views=24, points=400, seed=0)
    start = perturbed(truth, rot_deg=1.0, trans=0.05, point_noise=0.02, seed=1)
    start.write(tmp_path / "in", fmt)
    rot0, centre0 = pose_errors(start.extrinsic, truth.extrinsic)
    assert rot0.max() > 0.5 and centre0.max() > 0.02  # the start is visibly wrong
    report = refine_model(tmp_path / "in", tmp_path / "out", BundleAdjustConfig(refine_focal_length=False))
    assert report.refined and report.termination == "CONVERGENCE"
    assert report.error_before_px > 3 and report.error_after_px < 1e-4
    assert report.images == 24 and report.observations == len(truth.obs_point)
    rot, centre = pose_errors(_extrinsics(tmp_path / "out"), truth.extrinsic)
    # Stated tolerance: 1e-3 degrees and 1e-4 scene units (the ring has radius 4) on exact observations.
    assert rot.max() < 1e-3 and centre.max() < 1e-4
    # The input stays as it was: only --out receives the refined model.
    np.testing.assert_allclose(_extrinsics(tmp_path / "in"), start.extrinsic, atol=1e-12)
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.suffix == f".{fmt}")[:3] == [
        f"cameras.{fmt}",
        f"frames.{fmt}",
        f"images.{fmt}",
    ]


def test_too_few_observations_keeps_the_model(tmp_path: Path) -> None:
    truth = ring_scene(views=6, points=12, seed=2)
    perturbed(truth, seed=4).write(tmp_path)
    before = (tmp_path / "images.bin").read_bytes()
    report = refine_model(tmp_path, config=BundleAdjustConfig(min_observations=16))
    assert not report.refined and "too few observations per image (fewer than 16)" in report.reason
    assert "view_000.png (12)" in report.reason and report.error_after_px is None
    assert (tmp_path / "images.bin").read_bytes() == before  # nothing written in place


def test_a_refinement_that_does_not_lower_the_error_is_not_kept(tmp_path: Path) -> None:
    # Exact start: the error is already ~0 and cannot go down, so the model is kept as it was.
    ring_scene(views=8, points=200, seed=5).write(tmp_path)
    before = (tmp_path / "images.bin").read_bytes()
    report = refine_model(tmp_path)
    assert not report.refined and "unrefined model is kept" in report.reason
    assert report.error_before_px < 1e-9
    assert (tmp_path / "images.bin").read_bytes() == before


def test_a_model_without_observations_or_with_bad_settings_is_refused(tmp_path: Path) -> None:
    from vggtctl.io.colmap_export import write_prediction_model

    truth = ring_scene(views=3, points=10)
    write_prediction_model(tmp_path, truth.extrinsic, truth.intrinsic, [(480, 640)] * 3, ["a", "b", "c"],
                           truth.points, np.zeros((10, 3), np.uint8))  # fmt: skip
    with pytest.raises(InputError, match="no 2-D observations"):
        refine_model(tmp_path)
    with pytest.raises(InputError, match="holds no COLMAP model"):
        refine_model(tmp_path / "nothing")
    with pytest.raises(UsageError):
        refine_model(tmp_path, config=BundleAdjustConfig(loss="l2"))


def test_colmap_refine_cli(tmp_path: Path) -> None:
    truth = ring_scene(views=8, points=150, seed=6)
    perturbed(truth, seed=7).write(tmp_path / "m")
    r = run_cli("colmap", "refine", tmp_path / "m", "--fixed-focal", "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["refined"] and report["error_after_px"] < 1e-4 < report["error_before_px"]
    assert json.loads((tmp_path / "m" / "bundle_adjustment.json").read_text())["refined"]
    rot, centre = pose_errors(_extrinsics(tmp_path / "m"), truth.extrinsic)
    assert rot.max() < 1e-3 and centre.max() < 1e-4
    r = run_cli("colmap", "refine", tmp_path / "empty")
    assert r.exit_code == 1 and "Error:" in r.stderr and "Hint:" in r.stderr


def test_points_seen_once_stay_in_the_model_but_out_of_the_adjustment(tmp_path: Path) -> None:
    from dataclasses import replace

    truth = ring_scene(views=8, points=100, seed=3)
    start = perturbed(truth, seed=4)
    # Points 0..4 keep only their frame-0 observation.
    keep = (start.obs_point >= 5) | (start.obs_frame == 0)
    start = replace(
        start, obs_point=start.obs_point[keep], obs_frame=start.obs_frame[keep], obs_xy=start.obs_xy[keep]
    )
    start.write(tmp_path / "in")
    report = refine_model(tmp_path / "in", tmp_path / "out", BundleAdjustConfig(refine_focal_length=False))
    assert report.refined and report.single_observation_points == 5 and report.points == 100
    _, _, pts = read_model(tmp_path / "out")
    assert sorted(pts) == list(range(1, 101))
    for pid in range(1, 6):  # not moved: the adjustment never saw them
        assert len(pts[pid].image_ids) == 1
        np.testing.assert_allclose(pts[pid].xyz, start.points[pid - 1])
    rot, _ = pose_errors(_extrinsics(tmp_path / "out"), truth.extrinsic)
    assert rot.max() < 1e-3
