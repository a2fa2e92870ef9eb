"""Issue 17 §4: depth, confidence and intrinsics mapped back to each source image's pixel grid."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vggtctl.data.preprocess import preprocess_images
from vggtctl.io.image_geometry import ImageGeometry, intrinsics_to_original
from vggtctl.models.vggt.geometry import unproject_depth_map_to_point_map
from vggtctl.services.original_resolution import frame_at_original, resample_to_original


def _geoms(mode: str) -> list[ImageGeometry]:
    """Real preprocessing geometry of a landscape, a portrait and a square image, mixed in one batch."""
    images = [Image.new("RGB", size, (90, 120, 30)) for size in [(640, 480), (300, 500), (333, 333)]]
    return preprocess_images(images, mode, 168)[1]


def _camera(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 0.2, 3)
    c, s = np.cos(a), np.sin(a)
    Rx = np.array([[1, 0, 0], [0, c[0], -s[0]], [0, s[0], c[0]]])
    Ry = np.array([[c[1], 0, s[1]], [0, 1, 0], [-s[1], 0, c[1]]])
    E = np.concatenate([Rx @ Ry, rng.normal(0, 0.3, (3, 1))], axis=1)
    return E, rng.uniform(-1, 1, (50, 3)) + [0, 0, 5]


@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_original_intrinsics_project_where_the_model_projection_maps_back(mode: str) -> None:
    for i, geom in enumerate(_geoms(mode)):
        h, w = geom.out_hw
        K_model = np.array([[150.0 + 10 * i, 0, w / 2], [0, 140.0 + 5 * i, h / 2], [0, 0, 1]])
        K_orig = intrinsics_to_original(K_model, geom)
        E, X = _camera(i)
        cam = X @ E[:, :3].T + E[:, 3]
        model_px = (cam @ K_model.T)[:, :2] / cam[:, 2:3]
        orig_px = (cam @ K_orig.T)[:, :2] / cam[:, 2:3]
        np.testing.assert_allclose(geom.to_original(model_px), orig_px, atol=1e-9)
        np.testing.assert_allclose(geom.to_model(orig_px), model_px, atol=1e-9)


@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_original_depth_unprojects_to_the_model_points(mode: str) -> None:
    """Depth affine in the pixel coordinates (bilinear interpolation is exact for it): unprojecting the
    original-resolution depth with the original intrinsics gives the points the model grid gives."""
    geoms = _geoms(mode)
    for i, geom in enumerate(geoms):
        h, w = geom.out_hw
        v, u = np.mgrid[0:h, 0:w].astype(np.float64)
        depth = 4.0 + 0.01 * u - 0.004 * v
        conf = 1.0 + 0.02 * u + 0.03 * v
        K = np.array([[150.0, 0, w / 2], [0, 150.0, h / 2], [0, 0, 1]])
        E, _ = _camera(10 + i)
        preds = {
            "depth": depth[None, ..., None].astype(np.float32),
            "depth_conf": conf[None].astype(np.float32),
            "intrinsic": K[None],
            "extrinsic": E[None],
        }
        frame = frame_at_original(preds, 0, geom)
        h0, w0 = geom.orig_hw
        assert frame["depth"].shape == frame["depth_conf"].shape == (h0, w0)
        np.testing.assert_allclose(frame["intrinsic"], intrinsics_to_original(K, geom))
        valid = frame["valid"]
        assert valid.mean() > 0.5 and np.isnan(frame["depth"][~valid]).all()
        if mode == "pad" or geom.offset_xy[1] == 0:
            assert valid.all()  # nothing was cut away: every original pixel has a depth
        assert (frame["depth_conf"][~valid] == 0).all()
        # Original pixel (u0, v0) sits at model coordinate (u0 sx + ox, v0 sy + oy).
        v0, u0 = np.mgrid[0:h0, 0:w0].astype(np.float64)
        sx, sy = geom.scale_xy
        ox, oy = geom.offset_xy
        mx, my = u0 * sx + ox, v0 * sy + oy
        # Exact inside the image region; the half-pixel rim beyond its last pixel centre takes the edge value.
        rh, rw = geom.resized_hw
        inner = valid & (mx >= max(ox, 0)) & (mx <= min(ox + rw, w) - 1) & (my >= max(oy, 0))
        inner &= my <= min(oy + rh, h) - 1
        assert inner.sum() > 0.9 * valid.sum()
        np.testing.assert_allclose(frame["depth"][inner], (4.0 + 0.01 * mx - 0.004 * my)[inner], rtol=1e-6)
        np.testing.assert_allclose(frame["depth_conf"][inner], (1 + 0.02 * mx + 0.03 * my)[inner], rtol=1e-6)
        valid = inner
        pts_orig = unproject_depth_map_to_point_map(
            np.nan_to_num(frame["depth"])[None], E[None], frame["intrinsic"][None]
        )[0]
        # The same world points, projected with the model camera, land on the mapped model coordinates.
        cam = pts_orig[valid].astype(np.float64) @ E[:, :3].T + E[:, 3]
        proj = (cam @ K.T)[:, :2] / cam[:, 2:3]
        np.testing.assert_allclose(proj, np.stack([mx[valid], my[valid]], axis=1), atol=2e-3)


def test_crop_leaves_the_cut_rows_without_depth() -> None:
    # A portrait image in crop mode: rows above and below the 168-row crop were never seen by the model.
    geom = _geoms("crop")[1]
    assert geom.offset_xy[1] < 0
    frame = resample_to_original(np.ones(geom.out_hw), geom)
    seen_rows = np.isfinite(frame).all(axis=1)
    first, last = np.flatnonzero(seen_rows)[[0, -1]]
    sy, oy = geom.scale_xy[1], geom.offset_xy[1]
    # Seen: model row coordinate v0 * sy + oy within [-0.5, H) (the rows kept and their rim).
    assert first == int(np.ceil((-0.5 - oy) / sy))
    assert last == int(np.ceil((geom.out_hw[0] - oy) / sy)) - 1
    assert 0 < first and last < geom.orig_hw[0] - 1
    assert not seen_rows[:first].any() and not seen_rows[last + 1 :].any()


def test_pad_geometry_of_mixed_portrait_and_landscape_maps_corners_onto_the_image_region() -> None:
    # The reference pads mixed shapes white, centred: each original image's corners map onto its region.
    for geom in _geoms("pad"):
        h0, w0 = geom.orig_hw
        corners = geom.to_model(np.array([[0.0, 0.0], [w0, h0]]))
        ox, oy = geom.offset_xy
        rh, rw = geom.resized_hw
        np.testing.assert_allclose(corners, [[ox, oy], [ox + rw, oy + rh]])
        assert 0 <= ox and 0 <= oy and ox + rw <= geom.out_hw[1] and oy + rh <= geom.out_hw[0]
