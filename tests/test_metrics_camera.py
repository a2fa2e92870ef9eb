"""Camera metrics: relative pose errors, RRA/RTA, VGGT's AUC@30 and ATE, against hand-made poses."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vggtctl.errors import EvaluationError
from vggtctl.services.metrics import (
    absolute_trajectory_error,
    camera_centres,
    camera_metrics,
    pose_auc,
    relative_pose_errors,
)


def look_at_extrinsics(centres: np.ndarray, target: np.ndarray | None = None) -> np.ndarray:
    """World→camera [S,3,4] for cameras at ``centres`` looking at ``target`` (OpenCV axes)."""
    target = np.zeros(3) if target is None else target
    out = []
    for c in centres:
        z = target - c
        z /= np.linalg.norm(z)
        x = np.cross(np.array([0.0, 0.0, 1.0]), z)
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        r = np.stack([x, y, z])  # rows: camera axes in world coordinates
        out.append(np.hstack([r, (-r @ c)[:, None]]))
    return np.stack(out)


def ring(n: int = 6, radius: float = 4.0) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([radius * np.cos(a), radius * np.sin(a), 0.3 * np.arange(n)], axis=1)


def transform_world(ext: np.ndarray, s: float, rot: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Extrinsics of the same cameras in a world where x_new = s·rot·x + t."""
    r_new = ext[:, :, :3] @ rot.T
    c_new = s * camera_centres(ext) @ rot.T + t
    return np.concatenate([r_new, -np.einsum("nij,nj->ni", r_new, c_new)[:, :, None]], axis=2)


def test_perfect_cameras_score_auc_100_and_zero_ate() -> None:
    gt = look_at_extrinsics(ring())
    res = camera_metrics(gt, gt)
    assert res.pairs == 15 and res.pairs_skipped == 0
    assert res.auc30 == pytest.approx(100.0)
    assert res.rra == {"5": 100.0, "15": 100.0, "30": 100.0}
    assert res.rta == {"5": 100.0, "15": 100.0, "30": 100.0}
    assert res.ate_rmse == pytest.approx(0, abs=1e-12)


def test_similarity_of_the_world_is_recovered_and_ignored() -> None:
    gt = look_at_extrinsics(ring())
    rot = Rotation.from_euler("xyz", [20, -35, 110], degrees=True).as_matrix()
    pred = transform_world(gt, 0.25, rot, np.array([3.0, -1.0, 7.0]))
    res = camera_metrics(pred, gt)
    assert res.rot_err_mean == pytest.approx(0, abs=1e-6)
    assert res.trans_err_mean == pytest.approx(0, abs=1e-6)
    assert res.auc30 == pytest.approx(100.0)
    assert res.ate_rmse == pytest.approx(0, abs=1e-9)
    # ATE's Umeyama maps the prediction back: inverse scale and rotation
    assert res.ate_alignment.scale == pytest.approx(4.0)
    assert res.ate_alignment.rotation == pytest.approx(rot.T, abs=1e-9)


def test_known_rotation_error_on_one_camera() -> None:
    gt = look_at_extrinsics(ring(5))
    pred = gt.copy()
    # rotate camera 2 by 10° about its own optical axis, keeping its centre: pairs with it err by 10°
    spin = Rotation.from_euler("z", 10, degrees=True).as_matrix()
    c2 = camera_centres(gt)[2]
    pred[2, :, :3] = spin @ gt[2, :, :3]
    pred[2, :, 3] = -pred[2, :, :3] @ c2
    rel = relative_pose_errors(pred, gt)
    involves = (rel.pairs == 2).any(axis=1)
    assert involves.sum() == 4
    assert rel.rot_deg[involves] == pytest.approx([10.0] * 4)
    assert rel.rot_deg[~involves] == pytest.approx([0.0] * 6, abs=1e-9)
    res = camera_metrics(pred, gt)
    assert res.rra == {"5": 60.0, "15": 100.0, "30": 100.0}


def with_centre(ext: np.ndarray, index: int, centre: list[float]) -> np.ndarray:
    """A copy of ``ext`` with camera ``index`` moved to ``centre``, its rotation unchanged."""
    out = ext.copy()
    out[index, :, 3] = -ext[index, :, :3] @ np.asarray(centre, dtype=np.float64)
    return out


def test_translation_direction_error_is_sign_agnostic_and_exact() -> None:
    gt = look_at_extrinsics(np.array([[0.0, -5, 0], [1.0, -5, 0]]))  # baseline along +x
    # the second camera on the mirrored side: the direction flips sign → 0° with the ambiguity
    assert relative_pose_errors(with_centre(gt, 1, [-1, -5, 0]), gt).trans_deg == pytest.approx(
        [0.0], abs=1e-9
    )
    # moved to (1, -5, 1): 45° between baselines (1,0,0) and (1,0,1)
    assert relative_pose_errors(with_centre(gt, 1, [1, -5, 1]), gt).trans_deg == pytest.approx([45.0])
    # a zero predicted baseline scores the worst angle, 90°, never NaN
    assert relative_pose_errors(with_centre(gt, 1, [0, -5, 0]), gt).trans_deg == pytest.approx([90.0])


def test_auc_discretisation_matches_vggt() -> None:
    # max errors 0.5, 10.5, 40: below t for t = 1..10 → 1/3, t = 11..30 → 2/3
    auc = pose_auc(np.array([0.5, 3.0, 40.0]), np.array([0.1, 10.5, 1.0]))
    assert auc == pytest.approx((10 * (1 / 3) + 20 * (2 / 3)) / 30)
    # exactly 30° is inside the last histogram bin; 30.0001 is not
    assert pose_auc(np.array([30.0]), np.array([0.0])) == pytest.approx(1 / 30)
    assert pose_auc(np.array([30.0001]), np.array([0.0])) == 0.0
    # an error of exactly 1° is not below 1° but is below 2°
    assert pose_auc(np.array([1.0]), np.array([0.0])) == pytest.approx(29 / 30)


def test_degenerate_cameras_raise_clear_errors() -> None:
    gt = look_at_extrinsics(ring(4))
    one_point = np.repeat(gt[:1], 4, axis=0)
    with pytest.raises(EvaluationError, match="ground-truth cameras are at one point"):
        camera_metrics(gt, one_point)
    collapsed = camera_metrics(one_point, gt)  # relative metrics still exist: every direction is 90° off
    assert collapsed.rta == {"5": 0.0, "15": 0.0, "30": 0.0} and collapsed.auc30 == 0.0
    assert collapsed.ate_rmse is None and "predicted positions are at one point" in (
        collapsed.ate_skipped or ""
    )
    with pytest.raises(EvaluationError, match="predicted positions are at one point"):
        absolute_trajectory_error(one_point, gt)
    with pytest.raises(EvaluationError, match="at least 2 frames"):
        camera_metrics(gt[:1], gt[:1])
    bad = gt.copy()
    bad[1, 0, 0] = np.nan
    with pytest.raises(EvaluationError, match="NaN"):
        camera_metrics(bad, gt)
