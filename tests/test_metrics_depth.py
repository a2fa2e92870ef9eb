"""Depth metrics and depth alignment against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vggtctl.errors import EvaluationError, UsageError
from vggtctl.services.metrics import depth_metrics, evaluate_depth, lstsq_scale_shift, median_scale


def test_hand_computed_metrics_on_three_pixels() -> None:
    gt = np.array([[1.0, 2.0], [4.0, 0.0]])  # the 0 is invalid and must be ignored
    pred = np.array([[1.1, 2.0], [3.0, 5.0]])
    m = depth_metrics(pred, gt)
    assert m["valid_pixels"] == 3
    assert m["abs_rel"] == pytest.approx((0.1 + 0 + 0.25) / 3)
    assert m["sq_rel"] == pytest.approx((0.01 + 0 + 0.25) / 3)
    assert m["rmse"] == pytest.approx(math.sqrt((0.01 + 0 + 1) / 3))
    assert m["mae"] == pytest.approx(1.1 / 3)
    assert m["rmse_log"] == pytest.approx(math.sqrt((math.log(1.1) ** 2 + math.log(0.75) ** 2) / 3))
    # ratios 1.1, 1.0, 4/3: δ1 fails on 4/3 only; only the exact pixel is within 3 %
    assert m["delta1"] == pytest.approx(2 / 3)
    assert m["delta2"] == 1.0 and m["delta3"] == 1.0
    assert m["inlier_1.03"] == pytest.approx(1 / 3)


def test_perfect_prediction_scores_zero_error_and_delta_one() -> None:
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 20, size=(3, 8, 9))
    res, _ = evaluate_depth(gt * 7.0, gt, "median")
    assert res.metrics["abs_rel"] == pytest.approx(0, abs=1e-12)
    assert res.metrics["rmse"] == pytest.approx(0, abs=1e-10)
    assert res.metrics["delta1"] == 1.0 and res.metrics["inlier_1.03"] == 1.0
    assert [r["scale"] for r in res.per_frame] == pytest.approx([1 / 7] * 3)


def test_known_per_pixel_error_gives_hand_computed_absrel_and_rmse() -> None:
    gt = np.full((1, 10, 10), 2.0)
    err = np.where(np.arange(100).reshape(1, 10, 10) % 2 == 0, 0.2, -0.2)
    res, _ = evaluate_depth(gt + err, gt, "none")
    assert res.metrics["abs_rel"] == pytest.approx(0.1)
    assert res.metrics["rmse"] == pytest.approx(0.2)
    assert res.metrics["mae"] == pytest.approx(0.2)
    assert res.metrics["sq_rel"] == pytest.approx(0.04 / 2)
    # the median of {1.8, 2.2} is 2.0, so per-image median scaling leaves these errors unchanged
    res_med, _ = evaluate_depth(gt + err, gt, "median")
    assert res_med.metrics["abs_rel"] == pytest.approx(0.1)
    assert res_med.metrics["rmse"] == pytest.approx(0.2)


def test_random_masks_are_respected() -> None:
    rng = np.random.default_rng(3)
    gt = rng.uniform(1, 10, size=(4, 16, 16))
    invalid = rng.random(gt.shape) < 0.4
    gt[invalid] = np.where(rng.random(invalid.sum()) < 0.5, 0.0, np.inf)
    extra = rng.random(gt.shape) < 0.7
    pred = gt * 2.5
    # garbage wherever the pixel is not scored: invalid ground truth, or outside the extra mask
    pred[invalid | ~extra] = np.nan
    pred[~extra & ~invalid] = 1e6
    res, _ = evaluate_depth(pred, gt, "median", mask=extra)
    assert res.valid_pixels == int((~invalid & extra).sum())
    assert res.metrics["abs_rel"] == pytest.approx(0, abs=1e-12)
    assert res.metrics["delta1"] == 1.0
    assert res.nonfinite_pred_pixels == 0


def test_scene_median_uses_one_scale_and_pools_pixels() -> None:
    gt = np.stack([np.full((4, 4), 2.0), np.full((4, 4), 4.0)])
    pred = np.stack([np.full((4, 4), 1.0), np.full((4, 4), 1.0)])  # frame-wise scales 2 and 4
    per_image, _ = evaluate_depth(pred, gt, "median")
    assert per_image.metrics["abs_rel"] == pytest.approx(0)
    scene, aligned = evaluate_depth(pred, gt, "scene-median")
    # all 32 pixels: median(gt) = 3, median(pred) = 1 → every prediction becomes 3
    assert scene.metrics["scale"] == pytest.approx(3.0)
    assert np.allclose(aligned, 3.0)
    assert scene.metrics["abs_rel"] == pytest.approx((0.5 + 0.25) / 2)
    assert scene.metrics["rmse"] == pytest.approx(1.0)
    assert scene.aggregation.startswith("pooled")


def test_lstsq_recovers_scale_and_shift() -> None:
    rng = np.random.default_rng(1)
    gt = rng.uniform(1, 5, size=(2, 6, 6))
    pred = (gt - 0.7) / 3.0
    res, _ = evaluate_depth(pred, gt, "lstsq")
    assert [r["scale"] for r in res.per_frame] == pytest.approx([3.0, 3.0])
    assert [r["shift"] for r in res.per_frame] == pytest.approx([0.7, 0.7])
    assert res.metrics["abs_rel"] == pytest.approx(0, abs=1e-12)
    assert lstsq_scale_shift(np.array([1.0, 2.0, 3.0]), np.array([3.0, 5.0, 7.0])) == pytest.approx(
        (2.0, 1.0)
    )


def test_nonpositive_and_nonfinite_predictions_are_outliers_not_nan() -> None:
    gt = np.array([[[1.0, 2.0, 4.0, 8.0]]])
    pred = np.array([[[1.0, -1.0, np.nan, 8.0]]])
    res, _ = evaluate_depth(pred, gt, "none")
    assert res.nonfinite_pred_pixels == 1
    assert res.metrics["delta1"] == pytest.approx(0.5)
    assert all(np.isfinite(v) for v in res.metrics.values())
    # |−1−2|/2 = 1.5 and the NaN counts as depth 0: |0−4|/4 = 1
    assert res.metrics["abs_rel"] == pytest.approx((0 + 1.5 + 1 + 0) / 4)


def test_zero_valid_pixels_and_bad_alignments_raise_clear_errors() -> None:
    gt = np.zeros((2, 3, 3))
    gt[1, 0, 0] = np.inf
    with pytest.raises(EvaluationError, match="zero valid ground-truth depth pixels"):
        evaluate_depth(np.ones((2, 3, 3)), gt, "median")
    with pytest.raises(EvaluationError, match="median predicted depth"):
        median_scale(np.array([-1.0, -2.0, 0.5]), np.array([1.0, 2.0, 3.0]))
    with pytest.raises(EvaluationError, match="constant"):
        lstsq_scale_shift(np.full(5, 2.0), np.arange(5.0))
    with pytest.raises(UsageError, match="unknown depth alignment"):
        evaluate_depth(np.ones((1, 2, 2)), np.ones((1, 2, 2)), "mean")


def test_frames_without_ground_truth_are_not_scored() -> None:
    gt = np.stack([np.zeros((3, 3)), np.full((3, 3), 2.0)])
    res, _ = evaluate_depth(np.full((2, 3, 3), 1.0), gt, "median")
    assert res.frames_scored == 1
    assert res.per_frame[0]["valid_pixels"] == 0
    assert res.metrics["abs_rel"] == pytest.approx(0)
