"""Pose encoding and unprojection against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vggtctl.models.vggt.geometry import (
    extri_intri_to_pose_encoding,
    mat_to_quat,
    pose_encoding_to_extri_intri,
    quat_to_mat,
    unproject_depth_map_to_point_map,
)

RZ90 = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]  # +90° about z


def test_quaternion_is_scalar_last_and_need_not_be_unit() -> None:
    s = math.sqrt(0.5)
    q = torch.tensor([0.0, 0.0, s, s])  # (x, y, z, w): 90° about z
    torch.testing.assert_close(quat_to_mat(q), torch.tensor(RZ90), atol=1e-6, rtol=0)
    torch.testing.assert_close(quat_to_mat(3.0 * q), torch.tensor(RZ90), atol=1e-6, rtol=0)
    torch.testing.assert_close(mat_to_quat(torch.tensor(RZ90)), q, atol=1e-6, rtol=0)
    # 180° about x: the trace is -1, the branch that needs the largest-component pick.
    torch.testing.assert_close(
        mat_to_quat(torch.diag(torch.tensor([1.0, -1.0, -1.0]))), torch.tensor([1.0, 0, 0, 0])
    )
    # Standardised to qw >= 0.
    assert float(mat_to_quat(quat_to_mat(-q))[3]) > 0


def test_intrinsics_from_fov_by_hand() -> None:
    h, w = 100, 200
    enc = torch.tensor([[[1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 1.0, 2 * math.atan(0.5), 2 * math.atan(0.25)]]])
    extrinsic, intrinsic = pose_encoding_to_extri_intri(enc, (h, w))
    assert extrinsic.shape == (1, 1, 3, 4) and intrinsic.shape == (1, 1, 3, 3)
    torch.testing.assert_close(extrinsic[0, 0], torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 2], [0, 0, 1, 3]]))
    # fy = (H/2)/tan(fov_h/2) = 50/0.5; fx = (W/2)/tan(fov_w/2) = 100/0.25; principal point (W/2, H/2).
    expected = torch.tensor([[400.0, 0, 100], [0, 100, 50], [0, 0, 1]])
    torch.testing.assert_close(intrinsic[0, 0], expected, rtol=1e-6, atol=1e-4)


def test_pose_encoding_round_trip() -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 5, 4, generator=g)
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[..., 3:] < 0, -q, q)
    t = torch.randn(2, 5, 3, generator=g)
    fov = torch.rand(2, 5, 2, generator=g) + 0.5
    enc = torch.cat([t, q, fov], dim=-1)
    h, w = 392, 518
    extrinsic, intrinsic = pose_encoding_to_extri_intri(enc, (h, w))
    rot = extrinsic[..., :3]
    torch.testing.assert_close(
        rot @ rot.transpose(-1, -2), torch.eye(3).expand(2, 5, 3, 3), atol=1e-5, rtol=0
    )
    back = extri_intri_to_pose_encoding(extrinsic, intrinsic, (h, w))
    torch.testing.assert_close(back, enc, atol=1e-5, rtol=1e-5)
    ext2, int2 = pose_encoding_to_extri_intri(back, (h, w))
    torch.testing.assert_close(ext2, extrinsic, atol=1e-5, rtol=0)
    torch.testing.assert_close(int2, intrinsic, atol=1e-3, rtol=1e-6)


def test_unprojection_of_one_pixel_by_hand() -> None:
    depth = np.full((1, 2, 3, 1), 5.0, dtype=np.float32)
    depth[0, 1, 2, 0] = 2.0
    k = np.array([[[2.0, 0, 1.0], [0, 4.0, 0.5], [0, 0, 1]]], dtype=np.float32)
    ext = np.zeros((1, 3, 4), dtype=np.float32)
    ext[0, :, :3] = RZ90
    ext[0, :, 3] = [1.0, 2.0, 3.0]
    pts = unproject_depth_map_to_point_map(depth, ext, k)
    assert pts.shape == (1, 2, 3, 3) and pts.dtype == np.float32
    # Pixel (u=2, v=1), d=2: X_c = ((2-1)·2/2, (1-0.5)·2/4, 2) = (1, 0.25, 2);
    # world = R^T (X_c - t) = R^T (0, -1.75, -1) = (-1.75, 0, -1).
    np.testing.assert_allclose(pts[0, 1, 2], [-1.75, 0.0, -1.0], atol=1e-6)
    # Pixel (0, 0), d=5: X_c = (-2.5, -0.625, 5) → R^T (-3.5, -2.625, 2) = (-2.625, 3.5, 2).
    np.testing.assert_allclose(pts[0, 0, 0], [-2.625, 3.5, 2.0], atol=1e-6)
    # Torch inputs and [S, H, W] depth give the same answer.
    same = unproject_depth_map_to_point_map(
        torch.from_numpy(depth[..., 0]), torch.from_numpy(ext), torch.from_numpy(k)
    )
    np.testing.assert_array_equal(same, pts)


def test_unprojection_rejects_mismatched_frames() -> None:
    with pytest.raises(ValueError, match="frame counts differ"):
        unproject_depth_map_to_point_map(np.ones((2, 4, 4, 1)), np.zeros((1, 3, 4)), np.eye(3)[None])
