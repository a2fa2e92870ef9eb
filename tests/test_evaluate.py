"""The evaluate service on synthetic ETH3D scenes with exact ground truth.

Predictions are built from the ground truth itself (optionally moved by a known similarity or given a
known depth error) and saved exactly as ``vggtctl infer`` saves them, so the whole path (frame matching,
ground-truth resampling, alignments, metrics, report) runs without a model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vggtctl.data.depth import resample_depth
from vggtctl.data.eth3d import open_scene
from vggtctl.data.frames import select_frame_indices
from vggtctl.data.preprocess import intrinsics_to_model, load_images
from vggtctl.errors import EvaluationError, InputError, UsageError
from vggtctl.io.predictions import save_predictions
from vggtctl.services.evaluate import EvalConfig, evaluate
from vggtctl.services.metrics import Sim3, camera_centres
from vggtctl.services.metrics.pointcloud import unproject_depth

SIZE = 266  # model input width for the saved predictions: small keeps the tests fast


def truth_predictions(
    scene_dir: Path,
    out: Path,
    sim: Sim3 | None = None,
    depth_factor: float = 1.0,
    collapse_cameras: bool = False,
    nan_cameras: bool = False,
    points_depth_factor: float = 1.0,
) -> Path:
    """Save the ground truth of a scene as a predictions.npz, moved into another world by ``sim``."""
    sim = sim or Sim3()
    scene = open_scene(scene_dir)
    frames = scene.frames
    images, geoms = load_images([f.image_path for f in frames], target_size=SIZE)
    gt = np.stack([resample_depth(scene.gt_depth(f), g) for f, g in zip(frames, geoms, strict=True)])
    k = np.stack([intrinsics_to_model(f.K, g) for f, g in zip(frames, geoms, strict=True)])
    ext = np.stack([f.extrinsic for f in frames])
    points = sim.apply(unproject_depth(gt * points_depth_factor, k, ext))
    rot = ext[:, :, :3] @ sim.rotation.T
    centres = sim.apply(camera_centres(ext))
    if collapse_cameras:
        centres[:] = centres[0]
    new_ext = np.concatenate([rot, -np.einsum("nij,nj->ni", rot, centres)[:, :, None]], axis=2)
    if nan_cameras:
        new_ext[1:] = np.nan
    depth = np.where(gt > 0, gt * sim.scale * depth_factor, 1.0)[..., None]
    preds = {
        "depth": depth.astype(np.float32),
        "extrinsic": new_ext.astype(np.float32),
        "world_points_from_depth": points.astype(np.float32),
        "images": images,
    }
    save_predictions(out, preds, geoms, [str(f.image_path) for f in frames], {"source": "ground truth"})
    return out


@pytest.fixture(scope="module")
def perfect(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return truth_predictions(synthetic_root / "synth_000", tmp_path_factory.mktemp("perfect"))


def run(root: Path, predictions: Path, **kw: object) -> dict:
    report = evaluate(EvalConfig(data=root, predictions=predictions, **kw))  # type: ignore[arg-type]
    d = report.to_dict()
    json.dumps(d, allow_nan=False)  # never NaN/inf in the report
    return d


def test_perfect_prediction_scores_perfectly(synthetic_root: Path, perfect: Path) -> None:
    r = run(synthetic_root, perfect, pc_reference="depth")
    (scene,) = r["scenes"]
    assert scene["name"] == "synth_000" and len(scene["frames"]) == 6
    for align in ("median", "scene-median"):
        m = scene["depth"][align]["metrics"]
        assert m["abs_rel"] == pytest.approx(0, abs=1e-7)
        assert m["delta1"] == 1.0 and m["inlier_1.03"] == 1.0
    cam = scene["camera"]
    assert cam["auc@30"] == pytest.approx(100.0)
    assert cam["rra"] == {"5": 100.0, "15": 100.0, "30": 100.0}
    assert cam["rta"] == {"5": 100.0, "15": 100.0, "30": 100.0}
    assert cam["pairs"] == 15
    assert cam["ate"]["rmse"] == pytest.approx(0, abs=1e-5)
    assert len(cam["per_pair"]["pairs"]) == 15 and max(cam["per_pair"]["rot_err_deg"]) < 1e-3
    assert scene["pointcloud"] is None  # ETH3D's protocol needs the scans (--pc-reference scan)
    pc = scene["pointcloud_nn"]
    assert pc["mean_dist_pred_to_gt"] == pytest.approx(0, abs=1e-5)
    assert pc["mean_dist_gt_to_pred"] == pytest.approx(0, abs=1e-5)
    assert all(v == 1.0 for v in pc["nn_f1"].values())
    assert r["mean"]["camera"]["auc@30"] == pytest.approx(100.0)
    assert r["provenance"] == {"source": "ground truth"}
    assert r["warnings"] == []


def test_known_similarity_of_the_truth_is_recovered(synthetic_root: Path, tmp_path: Path) -> None:
    rot = Rotation.from_euler("xyz", [10, -25, 140], degrees=True).as_matrix()
    sim = Sim3(0.3, rot, np.array([1.0, -2.0, 3.0]))
    pred = truth_predictions(synthetic_root / "synth_000", tmp_path / "p", sim=sim)
    for pc_align in ("points", "cameras"):
        r = run(synthetic_root, pred, pc_reference="depth", pc_align=pc_align)
        (scene,) = r["scenes"]
        fit = scene["pointcloud_alignment"]["sim3"]
        assert fit["scale"] == pytest.approx(1 / 0.3, rel=1e-5)
        assert np.array(fit["rotation"]) == pytest.approx(rot.T, abs=1e-5)
        assert scene["pointcloud_nn"]["mean_dist_pred_to_gt"] == pytest.approx(0, abs=1e-4)
        assert scene["camera"]["ate_alignment"]["scale"] == pytest.approx(1 / 0.3, rel=1e-5)
        assert scene["camera"]["auc@30"] == pytest.approx(100.0)
        assert scene["depth"]["median"]["metrics"]["abs_rel"] == pytest.approx(0, abs=1e-6)
        assert scene["depth"]["median"]["per_frame"][0]["scale"] == pytest.approx(1 / 0.3, rel=1e-5)


def test_known_depth_error_gives_hand_computed_metrics(synthetic_root: Path, tmp_path: Path) -> None:
    pred = truth_predictions(synthetic_root / "synth_000", tmp_path / "p", depth_factor=1.1)
    r = run(synthetic_root, pred, depth_align=("none", "lstsq", "median"), pc_reference="depth")
    depth = r["scenes"][0]["depth"]
    none = depth["none"]
    # d = 1.1 d*: |d − d*| / d* = 0.1 on every pixel; ratio 1.1 passes δ<1.25 but not τ<1.03
    assert none["metrics"]["abs_rel"] == pytest.approx(0.1, rel=1e-6)
    assert none["metrics"]["delta1"] == 1.0 and none["metrics"]["inlier_1.03"] == 0.0
    # RMSE per frame = 0.1 · sqrt(mean d*²), averaged over frames
    scene = open_scene(synthetic_root / "synth_000")
    _, geoms = load_images([f.image_path for f in scene.frames], target_size=SIZE)
    rms = []
    for f, g in zip(scene.frames, geoms, strict=True):
        d = resample_depth(scene.gt_depth(f), g).astype(np.float64)
        rms.append(0.1 * np.sqrt(np.mean(d[d > 0] ** 2)))
    assert none["metrics"]["rmse"] == pytest.approx(np.mean(rms), rel=1e-5)
    assert depth["lstsq"]["metrics"]["abs_rel"] == pytest.approx(0, abs=1e-6)
    assert depth["median"]["per_frame"][0]["scale"] == pytest.approx(1 / 1.1, rel=1e-6)
    assert depth["median"]["aggregation"] == "mean over frames"


def test_scan_reference_keeps_visible_scan_points(synthetic_root: Path, perfect: Path) -> None:
    r = run(synthetic_root, perfect, pc_reference="scan", voxel_size=0.0, nn_metrics=True)
    (scene,) = r["scenes"]
    info = scene["pointcloud_alignment"]
    assert info["reference"] == "scan"
    assert 0 < info["scan_points_visible"] < info["scan_points"]
    # every visible scan point lies on a surface the perfect prediction covers, one model pixel apart
    assert scene["pointcloud_nn"]["mean_dist_gt_to_pred"] < 0.05
    assert scene["pointcloud_nn"]["nn_recall"]["10cm"] > 0.95


@pytest.mark.slow
def test_scan_reference_scores_the_official_protocol(
    synthetic_root: Path, perfect: Path, tmp_path: Path
) -> None:
    r = run(synthetic_root, perfect, tolerances=(0.02, 0.1, 0.5))
    (scene,) = r["scenes"]
    pc = scene["pointcloud"]
    assert pc["protocol"] == "eth3d-official" and pc["tolerances"] == [0.02, 0.1, 0.5]
    assert scene["pointcloud_nn"] is None  # only with --nn-metrics
    # the truth resampled to the model grid: accurate at 10 cm except at depth edges
    assert pc["accuracy"] == sorted(pc["accuracy"]) and pc["accuracy"][1] > 0.95, pc["accuracy"]
    assert pc["observed_points"][-1] > 1000
    # depth 10 % too short: the points float in front of the surfaces, in space the lasers crossed
    near_pred = truth_predictions(synthetic_root / "synth_000", tmp_path / "p", points_depth_factor=0.9)
    near = run(synthetic_root, near_pred, pc_align="cameras")["scenes"][0]["pointcloud"]
    assert near["accuracy"][0] < 0.2 and near["observed_points"][0] > 1000, near
    # ...and completeness grows with the tolerance but is bounded by what the 6 frames cover
    assert pc["completeness"] == sorted(pc["completeness"]) and 0.1 < pc["completeness"][-1] <= 1
    assert r["mean"]["pointcloud"]["f1"] == pc["f1"]


def test_multi_scene_folder_mean_and_report_file(synthetic_root: Path, tmp_path: Path) -> None:
    for name in ("synth_000", "synth_001"):
        truth_predictions(synthetic_root / name, tmp_path / "preds" / name, depth_factor=1.0)
    out = tmp_path / "report.json"
    r = run(synthetic_root, tmp_path / "preds", pc_reference="depth", out=out, icp=True)
    assert [s["name"] for s in r["scenes"]] == ["synth_000", "synth_001"]
    assert r["mean"]["camera"]["scenes"] == 2
    assert json.loads(out.read_text())["mean"] == r["mean"]
    icp = r["scenes"][1]["pointcloud_alignment"]["icp"]
    assert icp["fitness"] == pytest.approx(1.0) and icp["inlier_rmse"] == pytest.approx(0, abs=1e-4)
    assert r["settings"]["protocol"]["voxel_size_m"] == 0.01


def test_scene_without_depth_skips_depth_with_a_warning(
    synthetic_root: Path, perfect: Path, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    shutil.copytree(synthetic_root / "synth_000", root / "synth_000")
    shutil.rmtree(root / "synth_000" / "ground_truth_depth")
    r = run(root, perfect)
    (scene,) = r["scenes"]
    assert scene["depth"] == {} and scene["pointcloud"] is None
    assert scene["camera"]["auc@30"] == pytest.approx(100.0)
    assert any("no ground-truth depth" in w and "--kinds depth,jpg" in w for w in scene["warnings"])
    assert r["mean"]["depth"] == {} and r["mean"]["pointcloud"] is None


def test_zero_valid_depth_pixels_skip_depth(synthetic_root: Path, perfect: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(synthetic_root / "synth_000", root / "synth_000")
    for f in (root / "synth_000" / "ground_truth_depth" / "dslr_images").iterdir():
        np.full(f.stat().st_size // 4, np.inf, dtype="<f4").tofile(f)
    r = run(root, perfect)
    assert any("zero valid ground-truth depth pixels" in w for w in r["warnings"])
    assert r["scenes"][0]["depth"] == {}


def test_nothing_evaluable_is_an_error(synthetic_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(synthetic_root / "synth_000", root / "synth_000")
    shutil.rmtree(root / "synth_000" / "ground_truth_depth")
    pred = truth_predictions(synthetic_root / "synth_000", tmp_path / "p", nan_cameras=True)
    with pytest.raises(EvaluationError, match="nothing could be evaluated") as e:
        evaluate(EvalConfig(data=root, predictions=pred))
    assert "no ground-truth depth" in e.value.message and "NaN" in e.value.message


def test_collapsed_cameras_warn_and_never_produce_nan(synthetic_root: Path, tmp_path: Path) -> None:
    pred = truth_predictions(synthetic_root / "synth_000", tmp_path / "p", collapse_cameras=True)
    r = run(synthetic_root, pred, pc_align="cameras", pc_reference="depth")
    (scene,) = r["scenes"]
    # relative angles still say how bad it is; the Sim(3) of ATE and of --pc-align cameras cannot exist
    assert scene["camera"]["auc@30"] == 0.0 and scene["camera"]["rta"]["30"] == 0.0
    assert scene["camera"]["ate"] == {"rmse": None, "mean": None, "median": None}
    assert r["mean"]["camera"]["ate_rmse"] is None and r["mean"]["camera"]["ate_scenes"] == 0
    assert scene["pointcloud"] is None
    assert scene["depth"]["median"]["metrics"]["abs_rel"] == pytest.approx(0, abs=1e-7)
    assert any(w.startswith("ATE skipped: cannot align camera centres") for w in scene["warnings"])
    assert any("point-cloud metrics skipped" in w for w in scene["warnings"])


def test_predictions_from_another_scene_are_rejected(synthetic_root: Path, perfect: Path) -> None:
    with pytest.raises(InputError, match="not an image of scene synth_001"):
        evaluate(EvalConfig(data=synthetic_root, predictions=perfect, scenes=["synth_001"]))


def test_options_are_validated_all_at_once(synthetic_root: Path) -> None:
    cfg = EvalConfig(
        data=synthetic_root, frames=1, stride=0, depth_align=("mean",), model="tiny", predictions=Path("x")
    )
    with pytest.raises(UsageError) as e:
        evaluate(cfg)
    # Python API users see field names and values, never flags.
    for part in ("frames=1", "stride=0", "depth_align='mean'", "model and predictions: give one, not both"):
        assert part in e.value.message
    assert "--" not in e.value.message


def test_frame_selection_stride_and_seeded_random() -> None:
    assert select_frame_indices(10, EvalConfig(), "a") == list(range(10))
    assert select_frame_indices(10, EvalConfig(stride=3), "a") == [0, 3, 6, 9]
    assert select_frame_indices(10, EvalConfig(stride=3, frames=2), "a") == [0, 3]
    rnd = EvalConfig(frames=4, sample="random", seed=7)
    a = select_frame_indices(30, rnd, "courtyard")
    assert a == select_frame_indices(30, rnd, "courtyard") == sorted(set(a)) and len(a) == 4
    assert a != select_frame_indices(30, rnd, "facade")
    assert a != select_frame_indices(30, EvalConfig(frames=4, sample="random", seed=8), "courtyard")
    assert select_frame_indices(3, rnd, "x") == [0, 1, 2]
