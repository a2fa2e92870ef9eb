"""The ETH3D reader: calibration, depth mapping distorted -> undistorted, masks, scans, resampling."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import maximum_filter, minimum_filter

from vggtctl.data import camera_models
from vggtctl.data.depth import resample_depth, sample_depth
from vggtctl.data.eth3d import SUBSETS, TRAINING_SCENES, list_scenes, open_scene
from vggtctl.data.preprocess import ImageGeometry
from vggtctl.errors import InputError
from vggtctl.io.colmap import Camera, Image, rotmat_to_qvec, write_model_text
from vggtctl.io.meshlab import read_scan_alignment
from vggtctl.services import synthetic

# the courtyard camera 0 of ETH3D's dslr_calibration_jpg (FACTS.md §1.3)
COURTYARD = np.array([3411.42, 3410.02, 3041.29, 2014.07, 0.21047, 0.21102, -5.36231e-06, 0.00051541,
                      -0.158023, 0.406856, -8.46499e-05, 0.000861313])  # fmt: skip


def test_scene_tables() -> None:
    assert len(TRAINING_SCENES) == 13 and len(set(TRAINING_SCENES)) == 13
    assert SUBSETS["facades"] == ("facade", "electro", "courtyard", "terrace")
    assert set(SUBSETS["indoor"]) | set(SUBSETS["outdoor"]) == set(TRAINING_SCENES)
    assert not set(SUBSETS["indoor"]) & set(SUBSETS["outdoor"])
    assert len(SUBSETS["indoor"]) == 7


def test_thin_prism_fisheye_round_trip_and_hand_value() -> None:
    cam = Camera(0, "THIN_PRISM_FISHEYE", 6048, 4032, COURTYARD)
    gx, gy = np.meshgrid(np.arange(0, 6048, 97) + 0.5, np.arange(0, 4032, 89) + 0.5)
    pix = np.stack([gx.ravel(), gy.ravel()], axis=1)
    n = camera_models.cam_from_img(cam, pix)
    assert np.abs(camera_models.img_from_cam(cam, n) - pix).max() < 1e-8
    # hand-computed forward value for the normalised point (0.3, -0.2)
    a, b = 0.3, -0.2
    r = np.hypot(a, b)
    u, v = a * np.arctan(r) / r, b * np.arctan(r) / r
    fx, fy, cx, cy, k1, k2, p1, p2, k3, k4, sx1, sy1 = COURTYARD
    r2 = u * u + v * v
    radial = k1 * r2 + k2 * r2**2 + k3 * r2**3 + k4 * r2**4
    du = u * radial + 2 * p1 * u * v + p2 * (r2 + 2 * u * u) + sx1 * r2
    dv = v * radial + 2 * p2 * u * v + p1 * (r2 + 2 * v * v) + sy1 * r2
    expected = [fx * (u + du) + cx, fy * (v + dv) + cy]
    got = camera_models.img_from_cam(cam, np.array([[a * 5, b * 5, 5.0]]))[0]
    assert np.allclose(got, expected, atol=1e-9)
    pin = camera_models.pinhole_camera(1, 100, 80, 50.0, 60.0, 50.5, 40.25)
    assert np.allclose(
        camera_models.img_from_cam(pin, np.array([1.0, 2.0, 4.0])), [50 * 0.25 + 50.5, 60 * 0.5 + 40.25]
    )
    assert np.allclose(camera_models.cam_from_img(pin, np.array([63.0, 70.25])), [0.25, 0.5])


def _write_plane_scene(root: Path, *, with_mask: bool = False) -> tuple[Camera, Camera, np.ndarray]:
    """A one-image scene whose ground truth is the plane n . X = d (camera frame), computed by hand."""
    wd, hd = 150, 100
    dist = Camera(0, "THIN_PRISM_FISHEYE", wd, hd, np.array([80.0, 80.5, 74.0, 51.0, 0.06, 0.02, 3e-4, -2e-4,
                                                              -0.01, 0.01, 4e-4, -5e-4]))  # fmt: skip
    und = Camera(0, "PINHOLE", 200, 130, np.array([80.0, 80.5, 99.0, 66.5]))  # wider than the original
    R = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).T  # any rotation: poses are shared
    t = np.array([0.2, -0.1, 0.3])
    q = rotmat_to_qvec(R)
    write_model_text(root / "dslr_calibration_undistorted", {0: und},
                     {7: Image(7, q, t, 0, "dslr_images_undistorted/DSC_0042.JPG")})  # fmt: skip
    write_model_text(
        root / "dslr_calibration_jpg", {0: dist}, {7: Image(7, q, t, 0, "dslr_images/DSC_0042.JPG")}
    )
    normal, d = np.array([0.15, -0.1, 1.0]), 6.0  # plane n . X = d, seen obliquely
    n = camera_models.cam_from_img(dist, camera_models.pixel_centers(wd, hd))
    z = d / (normal[0] * n[..., 0] + normal[1] * n[..., 1] + normal[2])
    z[:, :10] = np.inf  # no laser points on the left strip
    depth_path = root / "ground_truth_depth" / "dslr_images" / "DSC_0042.JPG"
    depth_path.parent.mkdir(parents=True)
    z.astype("<f4").tofile(depth_path)
    if with_mask:
        from PIL import Image as PILImage

        m = np.zeros((hd, wd), np.uint8)
        m[40:60, 60:90] = 2
        m[0:5, :] = 1
        mp = root / "masks_for_images" / "dslr_images" / "DSC_0042.png"
        mp.parent.mkdir(parents=True)
        PILImage.fromarray(m).save(mp)
    return dist, und, normal / d


def test_gt_depth_on_a_plane_is_exact(tmp_path: Path) -> None:
    dist, und, plane = _write_plane_scene(tmp_path / "plane")
    scene = open_scene(tmp_path / "plane")
    (frame,) = scene.frames
    assert frame.name == "dslr_images_undistorted/DSC_0042.JPG" and frame.image_id == 7
    gt = scene.gt_depth(frame)
    assert gt.shape == (130, 200) and gt.dtype == np.float32
    # hand truth: z = 1 / (plane . (a, b, 1)) for the undistorted pixel centre's normalised ray
    n = camera_models.cam_from_img(und, camera_models.pixel_centers(200, 130))
    truth = 1.0 / (plane[0] * n[..., 0] + plane[1] * n[..., 1] + plane[2])
    # where the ray lands in the distorted image, away from its border and the invalid strip
    pix = camera_models.img_from_cam(dist, n)
    inner = (pix[..., 0] > 12.5) & (pix[..., 0] < 148.5) & (pix[..., 1] > 1.5) & (pix[..., 1] < 98.5)
    assert inner.sum() > 12000
    assert np.abs(gt[inner] - truth[inner]).max() < 1e-5  # float32 storage of ~6 m depths: ~5e-7
    # outside the distorted image and inside the inf strip: invalid, never extrapolated
    outside = (pix[..., 0] < 0) | (pix[..., 0] >= 150) | (pix[..., 1] < 0) | (pix[..., 1] >= 100)
    assert outside.any() and (gt[outside] == 0).all()
    assert (gt[pix[..., 0] < 10] == 0).all()


def test_gt_depth_mask_2_is_invalid_and_missing_mask_is_zero(tmp_path: Path) -> None:
    dist, und, _ = _write_plane_scene(tmp_path / "plane", with_mask=True)
    scene = open_scene(tmp_path / "plane")
    frame = scene.frames[0]
    m = scene.mask(frame)
    assert m.shape == (100, 150) and int(m.max()) == 2 and (m[0:5] == 1).all()
    gt = scene.gt_depth(frame)
    pix = camera_models.img_from_cam(
        dist, camera_models.cam_from_img(und, camera_models.pixel_centers(200, 130))
    )
    in_mask = (pix[..., 0] >= 60) & (pix[..., 0] < 90) & (pix[..., 1] >= 40) & (pix[..., 1] < 60)
    assert in_mask.sum() > 400 and (gt[in_mask] == 0).all()
    # mask 1 only marks unreliable colour: its depth stays valid
    top = (pix[..., 1] >= 1.5) & (pix[..., 1] < 4.5) & (pix[..., 0] > 12.5) & (pix[..., 0] < 148.5)
    assert top.any() and (gt[top] > 0).all()
    (tmp_path / "plane" / "masks_for_images" / "dslr_images" / "DSC_0042.png").unlink()
    assert (scene.mask(frame) == 0).all()


def test_sample_depth_never_blends_an_edge() -> None:
    depth = np.full((20, 20), 5.0, np.float32)
    depth[:, 10:] = 10.0
    depth[0:3, :] = np.inf
    xs, ys = np.meshgrid(np.linspace(0.2, 19.8, 71), np.linspace(0.2, 19.8, 67))
    out = sample_depth(depth, None, xs, ys)
    vals = np.unique(np.round(out, 4))
    assert set(vals.tolist()) <= {0.0, 5.0, 10.0}
    assert (
        (out[ys < 3] == 0).all()
        and (out[(ys > 4) & (xs < 9.5)] == 5).all()
        and (out[(ys > 4) & (xs > 10.5)] == 10).all()
    )


def test_resample_depth_pools_valid_samples() -> None:
    d = np.array([[1, 2, 9, 9], [3, np.inf, 9, 0], [4, 4, np.nan, 7], [4, 4, 7, 7]], np.float32)
    out = resample_depth(d, ImageGeometry((4, 4), (2, 2), (0, 0), (2, 2)))
    # lower median of the valid samples of each 2x2 block: {1,2,3} -> 2, {9,9,9} -> 9, {4,4,4,4} -> 4, {7,7,7} -> 7
    assert out.tolist() == [[2, 9], [4, 7]]
    allbad = resample_depth(
        np.full((4, 4), np.inf, np.float32), ImageGeometry((4, 4), (2, 2), (0, 0), (2, 2))
    )
    assert (allbad == 0).all()


def test_resample_depth_crop_offset_and_upsampling() -> None:
    d = np.arange(1, 13, dtype=np.float32).reshape(3, 4)  # 3 rows x 4 cols
    d[1, 1] = 0.0
    # upsample x2 and crop one model row from the top: model y = 2 * orig_y - 1
    out = resample_depth(d, ImageGeometry((3, 4), (6, 8), (0, -1), (4, 8)))
    assert out.shape == (4, 8)
    # model pixel (row r, col c) takes the original pixel containing its centre ((c+0.5)/2, (r+1.5)/2)
    for r in range(4):
        for c in range(8):
            i, j = int((r + 1.5) // 2), int((c + 0.5) // 2)
            assert out[r, c] == d[i, j]
    with pytest.raises(InputError, match="image geometry expects"):
        resample_depth(d, ImageGeometry((4, 4), (2, 2), (0, 0), (2, 2)))


def test_resample_depth_with_foundation_image_geometry() -> None:
    preprocess = pytest.importorskip("vggtctl.data.preprocess")
    geom = preprocess.ImageGeometry(orig_hw=(8, 12), resized_hw=(4, 6), offset_xy=(0, 1), out_hw=(6, 6))
    d = np.full((8, 12), 3.0, np.float32)
    out = resample_depth(d, geom)
    assert out.shape == (6, 6) and (out[0] == 0).all() and (out[1:5] == 3).all() and (out[5] == 0).all()


def _faces(
    spec: synthetic.SceneSpec, origin: np.ndarray, R: np.ndarray, cam: Camera
) -> tuple[np.ndarray, ...]:
    dirs = synthetic._world_dirs(cam, R, camera_models.pixel_centers(cam.width, cam.height))
    hit = synthetic.raycast(origin, dirs, spec.boxes)
    face = hit.box * 8 + np.abs(hit.normal).argmax(1) * 2 + (hit.normal.sum(1) > 0)
    shape = (cam.height, cam.width)
    return hit.t.reshape(shape), face.reshape(shape), hit.material.reshape(shape)


def test_synthetic_scene_gt_depth_matches_exact_raycast(synthetic_root: Path) -> None:
    scene = open_scene(synthetic_root / "synth_000")
    spec = synthetic.build_scene(np.random.default_rng([0, 0]))  # the generator's first draw for scene 0
    for frame in scene.frames[::2]:  # even views have no passer-by
        gt = scene.gt_depth(frame)
        R = frame.extrinsic[:, :3]
        exact, face, mat = _faces(spec, -R.T @ frame.extrinsic[:, 3], R, scene.cameras[frame.camera_id])
        # interior of one planar face: 7x7 neighbourhood on the same face, inside the image
        interior = minimum_filter(face, 7, mode="constant", cval=-99) == maximum_filter(
            face, 7, mode="constant", cval=99
        )
        interior &= np.isfinite(exact)
        assert interior.sum() > 20000
        assert (gt[interior] > 0).mean() > 0.99
        ok = interior & (gt > 0)
        rel = np.abs(gt[ok] - exact[ok]) / exact[ok]
        assert rel.max() < 1e-4
        facade = ok & (mat == synthetic.BRICK)
        assert facade.sum() > 5000 and np.abs(gt[facade] - exact[facade]).max() < 1e-4
        # the sky is invalid (away from silhouettes, where the nearest distorted pixel may be a hit)
        sky = minimum_filter((~np.isfinite(exact)).astype(np.uint8), 5, mode="nearest") == 1
        assert sky.sum() > 1000 and (gt[sky] == 0).all()


def test_scan_points_lie_on_the_scene(synthetic_root: Path) -> None:
    scene = open_scene(synthetic_root / "synth_000")
    assert scene.has_scans() and scene.has_depth()
    pts = scene.scan_points()
    sub = scene.scan_points(max_points=500, seed=1)
    assert sub.shape == (500, 3) and len(pts) > 5000
    assert np.array_equal(sub, scene.scan_points(max_points=500, seed=1))
    spec = synthetic.build_scene(np.random.default_rng([0, 0]))
    on = np.abs(pts[:, 2]) < 1e-4  # ground
    for box in spec.boxes:
        inside = np.all((pts >= box.lo - 1e-4) & (pts <= box.hi + 1e-4), axis=1)
        on_face = np.any((np.abs(pts - box.lo) < 1e-4) | (np.abs(pts - box.hi) < 1e-4), axis=1)
        on |= inside & on_face
    assert on.all()


def test_calibration_round_trip(synthetic_root: Path) -> None:
    scene = open_scene(synthetic_root / "synth_001")
    assert [f.name for f in scene.frames] == [f"dslr_images_undistorted/DSC_{k:04d}.JPG" for k in range(6)]
    cams = {f.camera_id for f in scene.frames}
    assert cams == {0, 1}
    for f in scene.frames:
        assert f.image_path.is_file()
        assert (
            f.K[0, 0] == scene.cameras[f.camera_id].params[0]
            and f.K[1, 2] == scene.cameras[f.camera_id].params[3]
        )
        R = f.extrinsic[:, :3]
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-12)
        cam_d, ext_d = scene.distorted_camera(f)
        assert cam_d.model == "THIN_PRISM_FISHEYE" and np.allclose(ext_d, f.extrinsic)
        img = scene.load_image(f)
        assert img.shape == (f.height, f.width, 3) and img.dtype == np.uint8
    # write the model back, read it again: identical frames
    copy = synthetic_root.parent / "roundtrip" / "synth_001"
    shutil.rmtree(copy.parent, ignore_errors=True)
    shutil.copytree(synthetic_root / "synth_001", copy)
    from vggtctl.io.colmap import read_model_text

    cameras, images, points = read_model_text(copy / "dslr_calibration_undistorted")
    write_model_text(copy / "dslr_calibration_undistorted", cameras, images, points)
    again = open_scene(copy)
    for a, b in zip(scene.frames, again.frames, strict=True):
        assert (
            a.name == b.name
            and np.allclose(a.K, b.K, rtol=1e-9)
            and np.allclose(a.extrinsic, b.extrinsic, atol=1e-9)
        )


def test_list_scenes_skips_partial_and_hidden(tmp_path: Path, synthetic_root: Path) -> None:
    assert list_scenes(synthetic_root) == ["synth_000", "synth_001"]
    (tmp_path / "half" / "images").mkdir(parents=True)
    (tmp_path / ".tmp-extract" / "dslr_calibration_undistorted").mkdir(parents=True)
    (tmp_path / ".tmp-extract" / "dslr_calibration_undistorted" / "images.txt").write_text("")
    assert list_scenes(tmp_path) == []
    with pytest.raises(InputError, match="does not exist"):
        list_scenes(tmp_path / "nope")
    with pytest.raises(InputError, match="not an ETH3D scene folder") as e:
        open_scene(tmp_path / "half")
    assert "vggtctl download eth3d" in (e.value.hint or "")


def test_malformed_files_name_file_and_line(tmp_path: Path, synthetic_root: Path) -> None:
    root = tmp_path / "synth_000"
    shutil.copytree(synthetic_root / "synth_000", root)
    cams = root / "dslr_calibration_undistorted" / "cameras.txt"
    lines = cams.read_text().splitlines()
    lines[4] = lines[4].replace("PINHOLE", "PINHOLE 1.0")
    cams.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"cameras\.txt:5: PINHOLE needs 4 parameters"):
        open_scene(root)
    shutil.copy(synthetic_root / "synth_000" / "dslr_calibration_undistorted" / "cameras.txt", cams)
    scene = open_scene(root)
    frame = scene.frames[0]
    # truncated depth
    depth = root / "ground_truth_depth" / "dslr_images" / frame.stem
    depth.write_bytes(depth.read_bytes()[:-4])
    with pytest.raises(InputError, match=r"DSC_0000\.JPG: \d+ bytes, a 312x208 float32 depth map has 259584"):
        scene.gt_depth(frame)
    # a mask value outside 0/1/2
    from PIL import Image as PILImage

    bad = np.zeros((208, 312), np.uint8)
    bad[3, 7] = 3
    PILImage.fromarray(bad).save(root / "masks_for_images" / "dslr_images" / "DSC_0000.png")
    with pytest.raises(
        InputError, match=r"DSC_0000\.png: mask values must be 0, 1 or 2; pixel \(row 3, col 7\) is 3"
    ):
        scene.mask(frame)
    # scan alignment: broken XML and a short matrix
    mlp = root / "dslr_scan_eval" / "scan_alignment.mlp"
    text = mlp.read_text()
    mlp.write_text(text.replace("</MeshGroup>", "</MeshGrop>"))
    with pytest.raises(InputError, match=r"scan_alignment\.mlp:\d+: malformed XML"):
        read_scan_alignment(mlp)
    first = text.index("<MLMatrix44>")
    short = (
        text[:first] + "<MLMatrix44>\n1 0 0\n</MLMatrix44>" + text[text.index("</MLMatrix44>", first) + 13 :]
    )
    mlp.write_text(short)
    line = short[: short.index("<MLMatrix44>")].count("\n") + 1
    with pytest.raises(
        InputError, match=rf"scan_alignment\.mlp:{line}: MLMatrix44 of 'scan1.ply' has 3 numbers"
    ):
        scene.scan_points()
    # no distorted calibration: the hint says which kind to download
    shutil.rmtree(root / "dslr_calibration_jpg")
    with pytest.raises(InputError, match="no distorted calibration") as e:
        open_scene(root).gt_depth(frame)
    assert "--kinds jpg" in (e.value.hint or "")


@pytest.mark.parametrize(
    ("kind", "file", "garbage", "message"),
    [
        ("undistorted", "cameras.txt", "garbage", r"cameras\.txt:\d+: expected 'CAMERA_ID MODEL"),
        (
            "undistorted",
            "cameras.txt",
            "0 PINHOLE abc 213 1 1 1 1",
            r"cameras\.txt:\d+: expected a number, got 'abc'",
        ),
        (
            "undistorted",
            "cameras.txt",
            "5 FISHEYE 1 1 1",
            r"cameras\.txt:\d+: unknown camera model 'FISHEYE'",
        ),
        ("undistorted", "images.txt", "1 2 3\n", r"images\.txt:\d+: expected 'IMAGE_ID QW"),
        (
            "jpg",
            "cameras.txt",
            "0 THIN_PRISM_FISHEYE 10 10 1 2",
            r"cameras\.txt:\d+: THIN_PRISM_FISHEYE needs 12",
        ),
    ],
)
def test_a_garbage_calibration_line_gets_file_line_and_a_hint(
    tmp_path: Path, synthetic_root: Path, kind: str, file: str, garbage: str, message: str
) -> None:
    from typer.testing import CliRunner

    from vggtctl.cli.app import app

    root = tmp_path / "synth_000"
    shutil.copytree(synthetic_root / "synth_000", root)
    folder = root / ("dslr_calibration_undistorted" if kind == "undistorted" else "dslr_calibration_jpg")
    path = folder / file
    path.write_text(path.read_text() + garbage + "\n")
    with pytest.raises(InputError, match=message) as e:
        open_scene(root).gt_depth(open_scene(root).frames[0]) if kind == "jpg" else open_scene(root)
    assert (
        e.value.hint
        == f"the calibration is damaged; re-download it: vggtctl download eth3d --scenes synth_000 --kinds {kind}"
    )
    res = CliRunner().invoke(
        app, ["evaluate", "--data", str(tmp_path), "--model", "tiny", "--pc-reference", "depth"]
    )
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith(("Error:", "Hint:"))]
    assert len(lines) == 2 and lines[1] == f"Hint: {e.value.hint}", res.output


def test_colmap_reader_errors_all_carry_a_hint(tmp_path: Path) -> None:
    from vggtctl.io.colmap import read_cameras_text, read_images_text, read_points3D_text

    cases = [
        (read_cameras_text, "cameras.txt", "1 PINHOLE 4 4 1 1 1\n"),
        (read_images_text, "images.txt", "1 1 0 0 0 0 0 0 1 a.jpg\n1 2\n"),
        (read_points3D_text, "points3D.txt", "1 0 0 0 255 255 255 0.5 7\n"),
        (read_points3D_text, "points3D.txt", "1 0 0 x 255 255 255 0.5\n"),
    ]
    for reader, name, text in cases:
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(InputError, match=rf"{name}:\d+: ") as e:
            reader(path)
        assert e.value.hint and "re-export" in e.value.hint
