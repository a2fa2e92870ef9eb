"""Umeyama Sim(3)/SE(3) and ICP recover known transforms; degenerate inputs raise clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vggtctl.errors import EvaluationError
from vggtctl.services.metrics import Sim3, icp, umeyama


def corner_cloud(n: int = 3000, seed: int = 0) -> np.ndarray:
    """Points on three unequal faces of a box corner: ICP has a unique optimum."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(0, 1, size=(n, 2))
    face = rng.integers(0, 3, size=n)
    pts = np.zeros((n, 3))
    pts[face == 0] = np.c_[2 * u[face == 0, 0], 1.5 * u[face == 0, 1], np.zeros((face == 0).sum())]
    pts[face == 1] = np.c_[2 * u[face == 1, 0], np.zeros((face == 1).sum()), u[face == 1, 1]]
    pts[face == 2] = np.c_[np.zeros((face == 2).sum()), 1.5 * u[face == 2, 0], u[face == 2, 1]]
    return pts


def test_umeyama_recovers_scale_rotation_translation() -> None:
    rng = np.random.default_rng(1)
    src = rng.normal(size=(50, 3))
    rot = Rotation.from_euler("zyx", [70, -20, 135], degrees=True).as_matrix()
    truth = Sim3(scale=2.5, rotation=rot, translation=np.array([1.0, -2.0, 0.5]))
    fit = umeyama(src, truth.apply(src))
    assert fit.scale == pytest.approx(2.5)
    assert fit.rotation == pytest.approx(rot, abs=1e-10)
    assert fit.translation == pytest.approx([1.0, -2.0, 0.5])
    assert np.linalg.det(fit.rotation) == pytest.approx(1.0)
    rigid = umeyama(src, Sim3(1.0, rot, np.zeros(3)).apply(src), with_scale=False)
    assert rigid.scale == 1.0 and rigid.rotation == pytest.approx(rot, abs=1e-10)


def test_umeyama_never_returns_a_reflection() -> None:
    rng = np.random.default_rng(2)
    src = rng.normal(size=(30, 3))
    fit = umeyama(src, src * np.array([1.0, 1.0, -1.0]))  # a mirror image: best proper rotation instead
    assert np.linalg.det(fit.rotation) == pytest.approx(1.0)


def test_sim3_compose_and_matrix_agree() -> None:
    a = Sim3(2.0, Rotation.from_euler("x", 30, degrees=True).as_matrix(), np.array([1.0, 0, 0]))
    b = Sim3(0.5, Rotation.from_euler("y", -50, degrees=True).as_matrix(), np.array([0, 2.0, 3.0]))
    p = np.array([[0.3, -1.0, 2.0], [1.0, 1.0, 1.0]])
    assert a.compose(b).apply(p) == pytest.approx(a.apply(b.apply(p)))
    hom = np.c_[p, np.ones(2)] @ a.compose(b).matrix().T
    assert hom[:, :3] == pytest.approx(a.apply(b.apply(p)))


def test_degenerate_alignments_raise() -> None:
    pts = np.random.default_rng(0).normal(size=(5, 3))
    with pytest.raises(EvaluationError, match="predicted positions are at one point"):
        umeyama(np.ones((5, 3)), pts, what="camera centres")
    with pytest.raises(EvaluationError, match="ground-truth positions are at one point"):
        umeyama(pts, np.zeros((5, 3)))
    line = np.outer(np.arange(5.0), [1.0, 2.0, 3.0])
    with pytest.raises(EvaluationError, match="one line"):
        umeyama(line, pts, min_rank=2)
    umeyama(line, line * 2)  # rank 1 is fine when only the positions matter (ATE)
    with pytest.raises(EvaluationError, match="need at least 2"):
        umeyama(pts[:1], pts[:1])
    nan = pts.copy()
    nan[1:] = np.nan
    with pytest.raises(EvaluationError, match="1 finite correspondence"):
        umeyama(nan, pts)


def test_icp_recovers_a_small_rigid_offset() -> None:
    dst = corner_cloud()
    rot = Rotation.from_euler("xyz", [2.0, -1.5, 3.0], degrees=True).as_matrix()
    moved = Sim3(1.0, rot, np.array([0.02, -0.015, 0.01])).apply(dst)
    res = icp(moved, dst, max_distance=0.1, max_iterations=100)
    assert res.transform.apply(moved) == pytest.approx(dst, abs=1e-6)
    assert res.fitness == 1.0
    assert res.inlier_rmse == pytest.approx(0, abs=1e-6)
    assert res.transform.scale == 1.0


def test_icp_without_correspondences_is_identity() -> None:
    dst = corner_cloud(200)
    res = icp(dst + 10.0, dst, max_distance=0.1)
    assert res.fitness == 0.0
    assert res.transform.apply(dst) == pytest.approx(dst)
