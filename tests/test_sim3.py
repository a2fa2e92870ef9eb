"""Robust Sim(3) (services/sim3.py): known transforms recovered exactly, with noise and with 30 % outliers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vggtctl.errors import InputError
from vggtctl.services.sim3 import robust_sim3, weighted_umeyama


def _known(seed: int = 3) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    src = rng.normal(size=(2000, 3)) * np.array([2.0, 1.0, 0.5]) + np.array([0.0, 0.0, 4.0])
    rot = Rotation.from_rotvec([0.3, -1.1, 0.7]).as_matrix()
    return src, 2.7, rot, np.array([1.5, -0.4, 3.0])


def _apply(src: np.ndarray, s: float, rot: np.ndarray, t: np.ndarray) -> np.ndarray:
    return s * src @ rot.T + t


def test_exact_transform_recovered() -> None:
    src, s, rot, t = _known()
    fit = robust_sim3(src, _apply(src, s, rot, t))
    assert fit.transform.scale == pytest.approx(s, rel=1e-10)
    np.testing.assert_allclose(fit.transform.rotation, rot, atol=1e-10)
    np.testing.assert_allclose(fit.transform.translation, t, atol=1e-9)
    assert fit.inliers == fit.points == 2000
    assert fit.residual_rel < 1e-10


def test_thirty_percent_outliers_recovered_exactly() -> None:
    src, s, rot, t = _known()
    dst = _apply(src, s, rot, t)
    rng = np.random.default_rng(11)
    bad = rng.choice(len(src), size=600, replace=False)  # 30 %
    dst[bad] += rng.normal(scale=3.0, size=(600, 3)) + 2.0  # gross, biased errors
    plain = weighted_umeyama(src, dst)
    assert np.linalg.norm(plain.translation - t) > 0.3  # least squares alone is pulled away
    fit = robust_sim3(src, dst)
    assert fit.transform.scale == pytest.approx(s, rel=1e-9)
    np.testing.assert_allclose(fit.transform.rotation, rot, atol=1e-9)
    np.testing.assert_allclose(fit.transform.translation, t, atol=1e-8)
    assert 1390 <= fit.inliers <= 1420  # the 1,400 clean points (plus any outlier that landed close)
    assert fit.residual_rel < 1e-9


def test_noise_gives_a_residual_of_the_noise_level() -> None:
    src, s, rot, t = _known()
    rng = np.random.default_rng(5)
    dst = _apply(src, s, rot, t) + rng.normal(scale=0.01, size=src.shape)
    fit = robust_sim3(src, dst)
    assert fit.transform.scale == pytest.approx(s, rel=2e-3)
    # median of a 3-D Gaussian norm ~1.54 sigma, relative to the extent
    assert fit.residual_rel == pytest.approx(1.54 * 0.01 / fit.extent, rel=0.2)


def test_too_few_points_refused() -> None:
    with pytest.raises(InputError, match="need at least 3"):
        robust_sim3(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(InputError, match="one place"):
        robust_sim3(np.ones((10, 3)), np.random.default_rng(0).normal(size=(10, 3)))
