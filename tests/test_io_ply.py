from __future__ import annotations

import numpy as np
import pytest

from vggtctl.errors import InputError
from vggtctl.io.ply import read_ply, write_ply


def test_binary_round_trip_with_colour_and_scalars(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(1000, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(1000, 3), dtype=np.uint8)
    conf = rng.random(1000).astype(np.float32)
    path = tmp_path / "p.ply"
    write_ply(path, xyz, rgb, scalars={"confidence": conf})
    raw = path.read_bytes()
    header = raw[: raw.index(b"end_header")].decode()
    assert "format binary_little_endian 1.0" in header
    assert "element vertex 1000" in header
    assert (
        "property float x" in header
        and "property uchar red" in header
        and "property float confidence" in header
    )
    # 3 floats + 3 bytes + 1 float per vertex, nothing else after the header.
    body = raw[raw.index(b"end_header") + len(b"end_header\n") :]
    assert len(body) == 1000 * (12 + 3 + 4)
    back = read_ply(path)
    np.testing.assert_array_equal(back["xyz"], xyz)
    np.testing.assert_array_equal(np.stack([back["red"], back["green"], back["blue"]], 1), rgb)
    np.testing.assert_array_equal(back["confidence"], conf)


def test_reads_ascii_and_big_endian(tmp_path):
    ascii_ply = tmp_path / "a.ply"
    ascii_ply.write_text(
        "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
        "end_header\n1 2 3\n4.5 5 6\n"
    )
    np.testing.assert_allclose(read_ply(ascii_ply)["xyz"], [[1, 2, 3], [4.5, 5, 6]])
    be = tmp_path / "b.ply"
    pts = np.array([[1.0, -2.0, 3.5]], dtype=">f8")
    be.write_bytes(
        b"ply\nformat binary_big_endian 1.0\nelement vertex 1\nproperty double x\nproperty double y\n"
        b"property double z\nend_header\n" + pts.tobytes()
    )
    np.testing.assert_allclose(read_ply(be)["xyz"], [[1.0, -2.0, 3.5]])


def test_truncated_and_garbage_files_name_the_problem(tmp_path):
    p = tmp_path / "t.ply"
    write_ply(p, np.zeros((10, 3), np.float32))
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(InputError, match="truncated"):
        read_ply(p)
    g = tmp_path / "g.ply"
    g.write_bytes(b"\x00\x01garbage")
    with pytest.raises(InputError, match="not a PLY"):
        read_ply(g)
