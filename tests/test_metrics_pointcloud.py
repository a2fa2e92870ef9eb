"""Point-cloud metrics: accuracy/completeness/overall and P/R/F1 against hand-computed distances."""

from __future__ import annotations

import numpy as np
import pytest

from vggtctl.errors import EvaluationError
from vggtctl.services.metrics import pointcloud_metrics, voxel_downsample


def grid(spacing: float = 0.1, n: int = 20) -> np.ndarray:
    a = np.arange(n) * spacing + spacing / 2
    x, y = np.meshgrid(a, a)
    return np.c_[x.ravel(), y.ravel(), np.zeros(x.size)]


def test_perfect_cloud_scores_zero_and_f1_one() -> None:
    gt = grid()
    res, pred_vox, dist = pointcloud_metrics(gt.copy(), gt, voxel_size=0.01)
    assert res.accuracy == 0.0 and res.completeness == 0.0 and res.overall == 0.0
    assert all(v == 1.0 for v in res.f1.values())
    assert list(res.f1) == ["1cm", "2cm", "5cm", "10cm", "20cm", "50cm"]
    assert res.pred_points == res.gt_points == 400
    assert len(pred_vox) == len(dist) == 400


def test_known_offset_gives_exact_distances_and_thresholds() -> None:
    gt = grid()
    pred = gt + np.array([0.0, 0.0, 0.03])  # every nearest neighbour is the shifted twin, 3 cm away
    for voxel in (0.0, 0.01):
        res, _, dist = pointcloud_metrics(pred, gt, voxel_size=voxel)
        assert res.accuracy == pytest.approx(0.03)
        assert res.completeness == pytest.approx(0.03)
        assert res.overall == pytest.approx(0.03)
        assert dist == pytest.approx(np.full(400, 0.03))
        assert res.precision == {"1cm": 0.0, "2cm": 0.0, "5cm": 1.0, "10cm": 1.0, "20cm": 1.0, "50cm": 1.0}
        assert res.f1["2cm"] == 0.0 and res.f1["5cm"] == 1.0


def test_partial_prediction_splits_accuracy_and_completeness() -> None:
    gt = grid()  # 20 x 20 points, spacing 10 cm
    left = gt[gt[:, 0] < 1.0]  # columns 0..9 only, exact
    res, _, _ = pointcloud_metrics(left, gt, voxel_size=0.0, tolerances=(0.01, 0.25))
    assert res.accuracy == 0.0
    # a missing point in column c (10..19) is (c − 9) · 10 cm from the nearest predicted column
    expected_comp = np.mean(np.r_[np.zeros(10), 0.1 * np.arange(1, 11)])
    assert res.completeness == pytest.approx(expected_comp)
    assert res.precision["1cm"] == 1.0
    assert res.recall["1cm"] == pytest.approx(0.5)
    assert res.f1["1cm"] == pytest.approx(2 * 0.5 / 1.5)
    assert res.recall["25cm"] == pytest.approx(0.6)  # columns 0..11 are within 25 cm


def test_voxel_downsample_averages_each_voxel() -> None:
    pts = np.array([[0.01, 0.01, 0.01], [0.03, 0.05, 0.07], [0.15, 0.0, 0.0], [0.19, 0.02, 0.0]])
    out = voxel_downsample(pts, 0.1)
    assert sorted(map(tuple, np.round(out, 12))) == [(0.02, 0.03, 0.04), (0.17, 0.01, 0.0)]
    assert voxel_downsample(pts, 0.0) is not pts and np.array_equal(voxel_downsample(pts, 0.0), pts)


def test_nonfinite_points_are_dropped_and_empty_clouds_raise() -> None:
    gt = grid()
    pred = np.vstack([gt, [[np.nan, 0, 0]]])
    res, _, _ = pointcloud_metrics(pred, gt, voxel_size=0.0)
    assert res.pred_points == 400 and res.accuracy == 0.0
    with pytest.raises(EvaluationError, match="no finite predicted point"):
        pointcloud_metrics(np.full((3, 3), np.nan), gt)
    with pytest.raises(EvaluationError, match="ground-truth point cloud is empty"):
        pointcloud_metrics(gt, np.zeros((0, 3)))


def test_unproject_depth_uses_pixel_centres_and_world_to_camera() -> None:
    from vggtctl.services.metrics.pointcloud import unproject_depth

    k = np.array([[[2.0, 0, 1.0], [0, 2.0, 1.0], [0, 0, 1]]])
    ext = np.array([[[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 1.0]]])  # camera at world z = -1
    pts = unproject_depth(np.full((1, 2, 2), 4.0), k, ext)
    # pixel (0, 0) has its centre at (0.5, 0.5): x = (0.5 − 1) / 2 · 4 = −1; world z = 4 − 1
    assert pts[0, 0, 0] == pytest.approx([-1.0, -1.0, 3.0])
    assert pts[0, 1, 1] == pytest.approx([1.0, 1.0, 3.0])


def test_visible_points_drops_occluded_out_of_view_and_unknown_points() -> None:
    from vggtctl.services.metrics.pointcloud import visible_points

    k = np.array([[[2.0, 0, 1.0], [0, 2.0, 1.0], [0, 0, 1]]])
    ext = np.array([[[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]]])
    depth = np.array([[[4.0, 4.0], [4.0, 0.0]]])  # bottom-right pixel has no ground truth
    pts = np.array(
        [
            [-1.0, -1.0, 4.0],  # on the surface of pixel (0, 0)
            [-1.0, -1.0, 8.0],  # behind it: occluded
            [-1.025, -1.025, 4.1],  # 2.5 % off in depth: within the 5 % tolerance
            [0.0, 0.0, -4.0],  # behind the camera
            [100.0, 0.0, 4.0],  # outside the image
            [1.0, 1.0, 4.0],  # projects onto the pixel without ground truth
        ]
    )
    assert visible_points(pts, depth, k, ext).tolist() == [True, False, True, False, False, False]


def test_nn_pyramid_matches_exact_search_on_a_tilted_surface() -> None:
    from scipy.spatial import cKDTree
    from scipy.spatial.transform import Rotation

    from vggtctl.services.metrics.pointcloud import NNIndex

    rng = np.random.default_rng(0)
    rot = Rotation.from_euler("xyz", [20, 30, 40], degrees=True).as_matrix()
    surface = np.c_[rng.uniform(0, 4, (60_000, 2)), np.zeros(60_000)] @ rot.T
    queries = np.c_[rng.uniform(0, 4, (3000, 2)), rng.uniform(-2, 2, 3000)] @ rot.T
    exact, _ = cKDTree(surface).query(queries)
    index = NNIndex(surface, voxel_size=0.01, min_points=500)
    fast = index.query(queries)
    near = exact < 0.1  # answered on the points themselves: exact
    assert fast[near] == pytest.approx(exact[near], abs=1e-12)
    # farther ones come from voxel-averaged grids: within √3 voxels of their level, ~0.2 % on average
    rel = np.abs(fast - exact) / exact
    assert rel.max() < 0.1
    assert abs(fast.mean() / exact.mean() - 1) < 0.005
    assert len(index._levels) > 2  # the coarse levels were really used
    assert NNIndex(surface, voxel_size=0.0).query(queries) == pytest.approx(exact, abs=1e-12)


def test_query_subsets_are_seeded_and_report_standard_errors() -> None:
    rng = np.random.default_rng(1)
    gt = rng.uniform(0, 1, (20_000, 3))
    pred = gt + rng.normal(scale=0.01, size=gt.shape)
    a, _, _ = pointcloud_metrics(pred, gt, max_queries=5000, seed=3)
    b, _, _ = pointcloud_metrics(pred, gt, max_queries=5000, seed=3)
    full, _, _ = pointcloud_metrics(pred, gt, max_queries=None)
    assert a.accuracy == b.accuracy and a.pred_queries == 5000 and full.pred_queries == 20_000
    assert full.accuracy_stderr == 0.0 and a.accuracy_stderr > 0
    assert abs(a.accuracy - full.accuracy) < 4 * a.accuracy_stderr
