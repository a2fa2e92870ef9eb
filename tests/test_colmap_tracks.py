"""Issue 17 §5: a COLMAP export whose points carry 2-D observations, read by COLMAP's own bindings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pycolmap
import pytest

from vggtctl.errors import InputError, UsageError
from vggtctl.io.colmap import read_model
from vggtctl.io.image_geometry import ImageGeometry
from vggtctl.models.vggt.geometry import unproject_depth_map_to_point_map
from vggtctl.services.bundle_adjust import reprojection_errors
from vggtctl.services.colmap_output import export_observations, write_export
from vggtctl.services.colmap_tracks import DEPTH_TOLERANCE
from vggtctl.services.infer import points_at, select_pixels

H, W = 48, 64


def _look_at(centre: np.ndarray, target: np.ndarray) -> np.ndarray:
    z = (target - centre) / np.linalg.norm(target - centre)
    x = np.cross([0.0, -1.0, 0.0], z)
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(z, x), z])
    return np.concatenate([R, (-R @ centre)[:, None]], axis=1)


def _plane_scene(geoms: list[ImageGeometry]) -> dict[str, np.ndarray]:
    """Three cameras looking at the plane z = 6: exact depth maps, predictions in VGGT's layout."""
    K = np.array([[60.0, 0, W / 2], [0, 60.0, H / 2], [0, 0, 1]])
    E = np.stack([_look_at(np.array([x, 0.2 * x, 0.0]), np.array([0.0, 0, 6])) for x in (-0.6, 0.0, 0.7)])
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([(u - W / 2) / 60.0, (v - H / 2) / 60.0, np.ones_like(u)], -1)
    depth = []
    for e in E:
        R, t = e[:, :3], e[:, 3]
        centre = -R.T @ t
        d_world = rays @ R  # R^T applied to each ray (camera -> world direction, z_cam = 1)
        depth.append((6.0 - centre[2]) / d_world[..., 2])  # z-depth, since the ray's z_cam is 1
    depth = np.stack(depth)[..., None].astype(np.float32)
    conf = (1.5 + np.random.default_rng(0).random((3, H, W))).astype(np.float32)
    preds = {
        "depth": depth,
        "depth_conf": conf,
        "extrinsic": E.astype(np.float32),
        "intrinsic": np.repeat(K[None], 3, 0).astype(np.float32),
        "images": np.random.default_rng(1).random((3, 3, H, W)).astype(np.float32),
    }
    preds["world_points_from_depth"] = unproject_depth_map_to_point_map(depth, E, preds["intrinsic"])
    return preds


GEOMS_MODEL = [ImageGeometry((H, W), (H, W), (0, 0), (H, W))] * 3
# Original images of 320x240 resized by 1/5 (model pixel = original pixel * 0.2).
GEOMS_ORIG = [ImageGeometry((240, 320), (H, W), (0, 0), (H, W))] * 3


def _export(
    tmp: Path, units: str, fmt: str, geoms: list[ImageGeometry]
) -> tuple[pycolmap.Reconstruction, int]:
    preds = _plane_scene(geoms)
    idx, thr = select_pixels(preds, geoms, conf_threshold="50%", max_points=2000)
    xyz, rgb, _ = points_at(preds, idx)
    obs = export_observations(preds, geoms, xyz, idx, thr, units)
    write_export(tmp, preds, geoms, ["a.png", "b.png", "c.png"], xyz, rgb, obs, units=units, fmt=fmt)
    return pycolmap.Reconstruction(str(tmp)), len(xyz)


@pytest.mark.parametrize(("units", "fmt"), [("model", "bin"), ("original", "bin"), ("original", "txt")])
def test_pycolmap_reads_consistent_observations(tmp_path: Path, units: str, fmt: str) -> None:
    geoms = GEOMS_ORIG if units == "original" else GEOMS_MODEL
    rec, n = _export(tmp_path, units, fmt, geoms)
    assert rec.num_images() == rec.num_cameras() == 3 and rec.num_points3D() == n == 2000
    for iid, image in rec.images.items():
        assert image.camera_id == iid and image.name == "abc"[iid - 1] + ".png"
        cam = rec.cameras[iid]
        assert (cam.width, cam.height) == ((320, 240) if units == "original" else (W, H))
    # Every observation reprojects onto its pixel: the export is self-consistent (exact depth).
    errors = reprojection_errors(rec)
    assert len(errors) == rec.compute_num_observations() > n
    assert errors.max() < (2e-3 if units == "model" else 1e-2)
    # Tracks and the images' 2-D points agree both ways.
    lengths = []
    for pid, point in rec.points3D.items():
        elements = point.track.elements
        lengths.append(len(elements))
        assert len({e.image_id for e in elements}) == len(elements)
        for e in elements:
            assert rec.images[e.image_id].points2D[e.point2D_idx].point3D_id == pid
    # A plane seen by three overlapping cameras; a projection counts only onto a pixel at least as confident
    # as the threshold (the median here, random confidences): about half of the overlaps.
    assert 1 <= min(lengths) and max(lengths) == 3 and np.mean(lengths) > 1.6
    assert rec.compute_mean_track_length() == pytest.approx(np.mean(lengths))


def test_observations_need_depth_agreement(tmp_path: Path) -> None:
    preds = _plane_scene(GEOMS_MODEL)
    preds["depth"][1] *= 1 + 3 * DEPTH_TOLERANCE  # frame 1 now "sees" something nearer everywhere
    idx, thr = select_pixels(preds, GEOMS_MODEL, conf_threshold="0%", max_points=3000)
    xyz, _, _ = points_at(preds, idx)
    obs = export_observations(preds, GEOMS_MODEL, xyz, idx, thr, "model")
    src_frame = idx // (H * W)
    in_frame_1 = obs.frame == 1
    # Frame 1 keeps only its own points' source observations; frames 0 and 2 still see each other's.
    assert set(obs.point[in_frame_1]) == set(np.flatnonzero(src_frame == 1))
    cross = obs.frame != src_frame[obs.point]
    assert cross.sum() > 0 and set(obs.frame[cross]) == {0, 2}


def test_padding_is_never_observed() -> None:
    # Frames whose left 16 model columns are white padding: no observation may land there.
    geoms = [ImageGeometry((H, W - 16), (H, W - 16), (16, 0), (H, W))] * 3
    preds = _plane_scene(geoms)
    idx, thr = select_pixels(preds, geoms, conf_threshold="0%", max_points=5000)
    xyz, _, _ = points_at(preds, idx)
    obs = export_observations(preds, geoms, xyz, idx, thr, "model")
    assert len(obs) > len(xyz) and np.rint(obs.xy[:, 0]).min() >= 16


def test_threshold_that_keeps_nothing_names_the_range() -> None:
    preds = _plane_scene(GEOMS_MODEL)
    lo, hi = float(preds["depth_conf"].min()), float(preds["depth_conf"].max())
    with pytest.raises(UsageError) as e:
        select_pixels(preds, GEOMS_MODEL, conf_threshold="1000")
    assert f"{lo:.4g} to {hi:.4g}" in e.value.message and "1000" in e.value.message
    # A percentile never keeps nothing, even at 100%.
    idx, thr = select_pixels(preds, GEOMS_MODEL, conf_threshold="100%")
    assert len(idx) >= 1 and thr == pytest.approx(hi)
    preds["world_points_from_depth"][:] = np.nan
    with pytest.raises(InputError):
        select_pixels(preds, GEOMS_MODEL, conf_threshold="50%")


def test_vggtctl_reader_agrees_with_pycolmap(tmp_path: Path) -> None:
    rec, _ = _export(tmp_path, "original", "bin", GEOMS_ORIG)
    cams, imgs, pts = read_model(tmp_path)
    assert sum(len(p.image_ids) for p in pts.values()) == rec.compute_num_observations()
    for iid, im in imgs.items():
        ours = im.xys[im.point3D_ids >= 0]
        theirs = np.array([p.xy for p in rec.images[iid].points2D])
        np.testing.assert_allclose(ours, theirs)


@pytest.mark.parametrize("fmt", ["bin", "txt"])
def test_array_tracks_write_the_same_files_as_point_objects(tmp_path: Path, fmt: str) -> None:
    from vggtctl.io.colmap import Point3D, PointCloud, write_model

    rec_dir = tmp_path / "arrays"
    rec, _ = _export(rec_dir, "model", fmt, GEOMS_MODEL)
    cams, imgs, pts = read_model(rec_dir)
    as_objects = {
        pid: Point3D(pid, p.xyz, p.rgb, p.error, p.image_ids, p.point2D_idxs) for pid, p in pts.items()
    }
    write_model(tmp_path / "objects", cams, imgs, as_objects, fmt)
    lengths = np.array([len(p.image_ids) for p in pts.values()])
    cloud = PointCloud(
        np.array([p.xyz for p in pts.values()]),
        np.array([p.rgb for p in pts.values()]),
        track_offsets=np.concatenate([[0], np.cumsum(lengths)]),
        track_image_ids=np.concatenate([p.image_ids for p in pts.values()]),
        track_point2D_idxs=np.concatenate([p.point2D_idxs for p in pts.values()]),
    )
    write_model(tmp_path / "again", cams, imgs, cloud, fmt)
    name = f"points3D.{fmt}"
    assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "objects" / name).read_bytes()
    assert (rec_dir / name).read_bytes() == (tmp_path / "objects" / name).read_bytes()
