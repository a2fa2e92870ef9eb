from __future__ import annotations

import numpy as np
import pytest

from vggtctl.errors import InputError
from vggtctl.io.colmap import (
    Camera,
    Image,
    Point3D,
    qvec_to_rotmat,
    read_images_text,
    read_model_text,
    rotmat_to_qvec,
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


def test_model_round_trip(tmp_path):
    cams = {0: Camera(0, "PINHOLE", 518, 392, np.array([400.0, 401.0, 259.0, 196.0]))}
    R = qvec_to_rotmat(np.array([0.9, 0.1, -0.2, 0.3]))
    images = {
        1: Image(1, rotmat_to_qvec(R), np.array([0.1, -2.0, 3.0]), 0, "a b.jpg",
                 np.array([[10.5, 20.25]]), np.array([7])),
        2: Image(2, np.array([1.0, 0, 0, 0]), np.zeros(3), 0, "b.jpg"),
    }  # fmt: skip
    points = {7: Point3D(7, np.array([1.0, 2.0, 3.0]), np.array([255, 0, 10]), 0.5, np.array([1]), np.array([0]))}
    write_model_text(tmp_path, cams, images, points)
    c2, i2, p2 = read_model_text(tmp_path)
    assert c2[0].model == "PINHOLE" and c2[0].width == 518
    np.testing.assert_allclose(c2[0].params, cams[0].params)
    assert i2[1].name == "a b.jpg" and i2[2].xys.shape == (0, 2)
    np.testing.assert_allclose(i2[1].rotation(), R, atol=1e-9)
    np.testing.assert_allclose(i2[1].xys, [[10.5, 20.25]])
    assert list(p2[7].rgb) == [255, 0, 10] and list(p2[7].image_ids) == [1]


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
