from __future__ import annotations

import numpy as np
import pytest

from vggtctl.errors import InputError
from vggtctl.io.colmap import (
    Camera,
    Image,
    Point3D,
    PointCloud,
    qvec_to_rotmat,
    read_images_text,
    read_model,
    read_model_binary,
    read_model_text,
    rotmat_to_qvec,
    write_model,
    write_model_text,
)


def test_quaternion_round_trip_and_hand_case():
    # 90 degrees about z: w = cos(45), z = sin(45); x axis goes to y axis.
    q = np.array([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)])
    R = qvec_to_rotmat(q)
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    rng = np.random.default_rng(1)
    for _ in range(50):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        q = q if q[0] >= 0 else -q
        np.testing.assert_allclose(rotmat_to_qvec(qvec_to_rotmat(q)), q, atol=1e-10)


def _model(name: str = "a_b.jpg"):
    cams = {
        0: Camera(0, "PINHOLE", 518, 392, np.array([400.0, 401.0, 259.0, 196.0])),
        3: Camera(3, "OPENCV", 640, 480, np.array([500.0, 502.0, 320.5, 239.5, -0.1, 0.01, 1e-3, -2e-4])),
    }
    R = qvec_to_rotmat(np.array([0.9, 0.1, -0.2, 0.3]))
    images = {
        1: Image(1, rotmat_to_qvec(R), np.array([0.1, -2.0, 3.0]), 0, name,
                 np.array([[10.5, 20.25], [1.0, 2.0]]), np.array([7, -1])),
        2: Image(2, np.array([1.0, 0, 0, 0]), np.zeros(3), 3, "b.jpg"),
    }  # fmt: skip
    points = {
        7: Point3D(7, np.array([1.0, 2.0, 3.0]), np.array([255, 0, 10]), 0.5, np.array([1]), np.array([0])),
        9: Point3D(9, np.array([-1.5, 0.25, 8.0]), np.array([1, 2, 3]), 0.0),
    }
    return cams, images, points, R


def test_model_round_trip(tmp_path):
    cams, images, points, R = _model()
    write_model_text(tmp_path, cams, images, points)
    c2, i2, p2 = read_model_text(tmp_path)
    assert c2[0].model == "PINHOLE" and c2[0].width == 518
    np.testing.assert_allclose(c2[0].params, cams[0].params)
    assert i2[1].name == "a_b.jpg" and i2[2].xys.shape == (0, 2)
    np.testing.assert_allclose(i2[1].rotation(), R, atol=1e-9)
    np.testing.assert_allclose(i2[1].xys, [[10.5, 20.25], [1.0, 2.0]])
    assert list(p2[7].rgb) == [255, 0, 10] and list(p2[7].image_ids) == [1]


def test_binary_round_trip_is_exact_and_keeps_spaces(tmp_path):
    cams, images, points, _ = _model("my image 1.png")
    files = write_model(tmp_path, cams, images, points, "bin")
    assert [f.name for f in files] == ["cameras.bin", "images.bin", "points3D.bin"]
    # the layout, by hand: u64 count, then i32 id, i32 model id (PINHOLE = 1), u64 width, u64 height, 4 f64
    raw = (tmp_path / "cameras.bin").read_bytes()
    assert raw[:8] == (2).to_bytes(8, "little") and raw[8:12] == (0).to_bytes(4, "little")
    assert raw[12:16] == (1).to_bytes(4, "little") and raw[16:24] == (518).to_bytes(8, "little")
    assert len(raw) == 8 + (24 + 4 * 8) + (24 + 8 * 8)
    assert len((tmp_path / "points3D.bin").read_bytes()) == 8 + (51 + 8) + 51
    c2, i2, p2 = read_model(tmp_path)
    for cid, cam in cams.items():
        assert (c2[cid].model, c2[cid].width, c2[cid].height) == (cam.model, cam.width, cam.height)
        np.testing.assert_array_equal(c2[cid].params, cam.params)  # binary: bit-exact
    assert i2[1].name == "my image 1.png" and i2[2].camera_id == 3
    np.testing.assert_array_equal(i2[1].qvec, images[1].qvec)
    np.testing.assert_array_equal(i2[1].tvec, images[1].tvec)
    np.testing.assert_array_equal(i2[1].xys, images[1].xys)
    assert i2[1].point3D_ids.tolist() == [7, -1] and i2[2].xys.shape == (0, 2)
    assert p2[7].error == 0.5 and p2[7].rgb.tolist() == [255, 0, 10]
    assert (
        p2[7].image_ids.tolist() == [1] and p2[7].point2D_idxs.tolist() == [0] and len(p2[9].image_ids) == 0
    )
    np.testing.assert_array_equal(p2[9].xyz, [-1.5, 0.25, 8.0])


def test_pycolmap_reads_both_formats_like_we_wrote_them(tmp_path):
    pycolmap = pytest.importorskip("pycolmap")
    cams, images, points, R = _model("my image 1.png")
    write_model(tmp_path / "bin", cams, images, points, "bin")
    images[1].name = "a_b.jpg"
    write_model(tmp_path / "txt", cams, images, points, "txt")
    for fmt, name in (("bin", "my image 1.png"), ("txt", "a_b.jpg")):
        rec = pycolmap.Reconstruction(str(tmp_path / fmt))
        assert (
            sorted(rec.cameras) == [0, 3] and sorted(rec.images) == [1, 2] and sorted(rec.points3D) == [7, 9]
        )
        assert rec.cameras[3].model.name == "OPENCV" and rec.cameras[3].width == 640
        np.testing.assert_allclose(rec.cameras[3].params, cams[3].params, rtol=1e-10)
        assert rec.images[1].name == name and rec.images[2].camera_id == 3
        E = rec.images[1].cam_from_world().matrix()
        np.testing.assert_allclose(E[:, :3], R, atol=1e-9)
        np.testing.assert_allclose(E[:, 3], [0.1, -2.0, 3.0], atol=1e-12)
        np.testing.assert_allclose(rec.points3D[9].xyz, [-1.5, 0.25, 8.0])
        assert rec.points3D[7].color.tolist() == [255, 0, 10] and rec.points3D[7].track.length() == 1


def test_text_refuses_names_colmap_would_read_differently(tmp_path):
    pycolmap = pytest.importorskip("pycolmap")
    cams, images, points, _ = _model("my image 1.png")
    # what COLMAP does with such a line: its reader stops at the first space
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "cameras.txt").write_text("1 PINHOLE 10 10 5 5 5 5\n")
    (tmp_path / "probe" / "images.txt").write_text("1 1 0 0 0 0 0 0 1 my image 1.png\n\n")
    (tmp_path / "probe" / "points3D.txt").write_text("")
    assert pycolmap.Reconstruction(str(tmp_path / "probe")).images[1].name == "my"
    with pytest.raises(
        InputError, match=r"text format cannot hold image names with spaces.*'my image 1.png'"
    ) as e:
        write_model(tmp_path / "m", cams, images, points, "txt")
    assert "--colmap-format bin" in (e.value.hint or "")
    assert not (tmp_path / "m").exists()  # refused before anything was written
    images[1].name = "tab\tname.png"
    with pytest.raises(InputError, match="tab\\\\tname.png"):
        write_model_text(tmp_path / "m", cams, images, points)


def test_cloud_arrays_write_the_same_bytes_as_point_objects(tmp_path):
    cams, images, _, _ = _model()
    rng = np.random.default_rng(3)
    xyz = rng.normal(size=(50, 3)).astype(np.float32).astype(np.float64)
    rgb = rng.integers(0, 256, (50, 3), dtype=np.uint8)
    objs = {j + 1: Point3D(j + 1, xyz[j], rgb[j], 0.0) for j in range(50)}
    for fmt in ("txt", "bin"):
        write_model(tmp_path / "objs", cams, images, objs, fmt)
        write_model(tmp_path / "cloud", cams, images, PointCloud(xyz, rgb), fmt)
        a, b = (
            (tmp_path / "objs" / f"points3D.{fmt}").read_bytes(),
            (tmp_path / "cloud" / f"points3D.{fmt}").read_bytes(),
        )
        assert a == b
        # float32 coordinates (what the model predicts) survive text exactly too: 9 significant digits
        _, _, pts = read_model(tmp_path / "cloud")
        back = np.stack([pts[j + 1].xyz for j in range(50)])
        np.testing.assert_array_equal(
            back.astype(np.float32) if fmt == "txt" else back, xyz.astype(np.float32) if fmt == "txt" else xyz
        )
        assert not (tmp_path / "cloud" / f"points3D.{'bin' if fmt == 'txt' else 'txt'}").exists()


def test_truncated_binary_names_file_and_offset(tmp_path):
    cams, images, points, _ = _model()
    write_model(tmp_path, cams, images, points, "bin")
    raw = (tmp_path / "images.bin").read_bytes()
    (tmp_path / "images.bin").write_bytes(raw[:70])
    with pytest.raises(InputError, match=r"images.bin: (truncated at byte|unterminated image name at byte)"):
        read_model_binary(tmp_path)
    (tmp_path / "images.bin").write_bytes(raw + b"x")
    with pytest.raises(InputError, match=r"images.bin: 1 unexpected bytes after the last record"):
        read_model_binary(tmp_path)


def test_empty_second_lines_and_eth3d_ids(tmp_path):
    (tmp_path / "images.txt").write_text(
        "# header\n0 1 0 0 0 0 0 0 0 dslr_images/DSC_0001.JPG\n\n"
        "5 1 0 0 0 1 2 3 3 dslr_images/DSC_0002.JPG\n\n"
    )
    imgs = read_images_text(tmp_path / "images.txt")
    assert sorted(imgs) == [0, 5]
    assert imgs[5].camera_id == 3 and imgs[5].name == "dslr_images/DSC_0002.JPG"
    np.testing.assert_allclose(imgs[5].center(), [-1, -2, -3])


def test_malformed_lines_name_file_and_line(tmp_path):
    (tmp_path / "cameras.txt").write_text("# c\n0 PINHOLE 10 10 1 2 3\n")
    (tmp_path / "images.txt").write_text("")
    with pytest.raises(InputError, match=r"cameras.txt:2: PINHOLE needs 4 parameters"):
        read_model_text(tmp_path)
    (tmp_path / "cameras.txt").write_text("0 PINHOLE 10 10 1 2 3 x\n")
    with pytest.raises(InputError, match=r"cameras.txt:1: expected a number, got 'x'"):
        read_model_text(tmp_path)
