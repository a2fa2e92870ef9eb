"""Pose encoding ↔ camera matrices, and depth unprojection, exactly as the reference computes them.

Conventions: extrinsics are camera-from-world ``[R | t]`` (OpenCV: x right, y down, z forward);
quaternions are scalar-last (XYZW); intrinsics use the principal point ``(W/2, H/2)`` and
``fy = (H/2) / tan(fov_h/2)``, ``fx = (W/2) / tan(fov_w/2)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def quat_to_mat(quaternions: Tensor) -> Tensor:
    """XYZW quaternions ``[..., 4]`` → rotation matrices ``[..., 3, 3]`` (need not be unit: ``2/|q|²``)."""
    i, j, k, r = torch.unbind(quaternions, -1)
    two_s = 2.0 / (quaternions * quaternions).sum(-1)
    o = torch.stack(
        (
            1 - two_s * (j * j + k * k),
            two_s * (i * j - k * r),
            two_s * (i * k + j * r),
            two_s * (i * j + k * r),
            1 - two_s * (i * i + k * k),
            two_s * (j * k - i * r),
            two_s * (i * k - j * r),
            two_s * (j * k + i * r),
            1 - two_s * (i * i + j * j),
        ),
        -1,
    )
    return o.reshape(quaternions.shape[:-1] + (3, 3))


def _sqrt_positive_part(x: Tensor) -> Tensor:
    ret = torch.zeros_like(x)
    positive = x > 0
    ret[positive] = torch.sqrt(x[positive])
    return ret


def mat_to_quat(matrix: Tensor) -> Tensor:
    """Rotation matrices ``[..., 3, 3]`` → XYZW unit quaternions ``[..., 4]`` with qw ≥ 0."""
    if matrix.shape[-1] != 3 or matrix.shape[-2] != 3:
        raise ValueError(f"expected rotation matrices [..., 3, 3], got {tuple(matrix.shape)}")
    batch = matrix.shape[:-2]
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = torch.unbind(matrix.reshape(batch + (9,)), dim=-1)
    q_abs = _sqrt_positive_part(
        torch.stack(
            (
                1.0 + m00 + m11 + m22,
                1.0 + m00 - m11 - m22,
                1.0 - m00 + m11 - m22,
                1.0 - m00 - m11 + m22,
            ),
            dim=-1,
        )
    )
    # Candidates in (r, i, j, k) order; pick the best-conditioned one (largest |component|).
    cand = torch.stack(
        (
            torch.stack((q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01), dim=-1),
            torch.stack((m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20), dim=-1),
            torch.stack((m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21), dim=-1),
            torch.stack((m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2), dim=-1),
        ),
        dim=-2,
    )
    floor = torch.tensor(0.1, dtype=q_abs.dtype, device=q_abs.device)
    cand = cand / (2.0 * q_abs[..., None].max(floor))
    out = cand[F.one_hot(q_abs.argmax(dim=-1), num_classes=4) > 0.5, :].reshape(batch + (4,))
    out = out[..., [1, 2, 3, 0]]  # rijk → ijkr (XYZW)
    return torch.where(out[..., 3:4] < 0, -out, out)


def extri_intri_to_pose_encoding(
    extrinsic: Tensor, intrinsic: Tensor, image_size_hw: Sequence[int]
) -> Tensor:
    """Cameras → 9-number pose encodings ``[..., 9]`` (T, quaternion XYZW, fov_h, fov_w), float32.

    Args:
        extrinsic: ``[..., 3, 4]`` camera-from-world.
        intrinsic: ``[..., 3, 3]`` pixels.
        image_size_hw: (H, W) of the image the intrinsics refer to.
    """
    h, w = image_size_hw
    rot = extrinsic[..., :3, :3]
    t = extrinsic[..., :3, 3]
    quat = mat_to_quat(rot)
    fov_h = 2 * torch.atan((h / 2) / intrinsic[..., 1, 1])
    fov_w = 2 * torch.atan((w / 2) / intrinsic[..., 0, 0])
    return torch.cat((t, quat, fov_h[..., None], fov_w[..., None]), dim=-1).float()


def pose_encoding_to_extri_intri(
    pose_enc: Tensor, image_size_hw: Sequence[int] | None = None, build_intrinsics: bool = True
) -> tuple[Tensor, Tensor | None]:
    """9-number pose encodings ``[..., 9]`` → (extrinsic ``[..., 3, 4]``, intrinsic ``[..., 3, 3]``).

    Args:
        pose_enc: Encodings (e.g. ``pose_enc [B, S, 9]`` from the model).
        image_size_hw: (H, W) of the model input; needed for intrinsics.
        build_intrinsics: Also build intrinsics (cx = W/2, cy = H/2).

    Returns:
        ``(extrinsic, intrinsic)``; intrinsic is None when not built.
    """
    t = pose_enc[..., :3]
    quat = pose_enc[..., 3:7]
    fov_h = pose_enc[..., 7]
    fov_w = pose_enc[..., 8]
    extrinsic = torch.cat((quat_to_mat(quat), t[..., None]), dim=-1)
    if not build_intrinsics:
        return extrinsic, None
    if image_size_hw is None:
        raise ValueError("image_size_hw (H, W) is needed to build intrinsics")
    h, w = image_size_hw
    fy = (h / 2.0) / torch.tan(fov_h / 2.0)
    fx = (w / 2.0) / torch.tan(fov_w / 2.0)
    intrinsic = torch.zeros(pose_enc.shape[:-1] + (3, 3), device=pose_enc.device, dtype=pose_enc.dtype)
    intrinsic[..., 0, 0] = fx
    intrinsic[..., 1, 1] = fy
    intrinsic[..., 0, 2] = w / 2
    intrinsic[..., 1, 2] = h / 2
    intrinsic[..., 2, 2] = 1.0
    return extrinsic, intrinsic


def closed_form_inverse_se3(se3: np.ndarray) -> np.ndarray:
    """Invert ``[N, 3, 4]`` or ``[N, 4, 4]`` rigid transforms → ``[N, 4, 4]`` (R^T, -R^T t)."""
    rot = se3[:, :3, :3]
    t = se3[:, :3, 3:]
    rot_t = np.transpose(rot, (0, 2, 1))
    out = np.tile(np.eye(4, dtype=se3.dtype), (len(rot), 1, 1))
    out[:, :3, :3] = rot_t
    out[:, :3, 3:] = -np.matmul(rot_t, t)
    return out


def _to_numpy(x: np.ndarray | Tensor) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().float().numpy()
    return np.asarray(x)


def unproject_depth_map_to_point_map(
    depth: np.ndarray | Tensor, extrinsic: np.ndarray | Tensor, intrinsic: np.ndarray | Tensor
) -> np.ndarray:
    """Depth maps + cameras → world points ``[S, H, W, 3]`` float32.

    Pixel (u, v) = (column, row) index (no +0.5): ``X_c = ((u - cx) d / fx, (v - cy) d / fy, d)``,
    world = ``R^T (X_c - t)``.

    Args:
        depth: ``[S, H, W, 1]`` or ``[S, H, W]`` z-depth.
        extrinsic: ``[S, 3, 4]`` camera-from-world.
        intrinsic: ``[S, 3, 3]``.
    """
    depth_np = _to_numpy(depth)
    if depth_np.ndim == 4:
        depth_np = depth_np[..., 0]
    ext = _to_numpy(extrinsic)
    intr = _to_numpy(intrinsic)
    if depth_np.ndim != 3 or ext.shape[-2:] not in ((3, 4), (4, 4)) or intr.shape[-2:] != (3, 3):
        raise ValueError(
            f"expected depth [S,H,W(,1)], extrinsic [S,3,4], intrinsic [S,3,3]; got {depth_np.shape}, {ext.shape}, {intr.shape}"
        )
    if not len(depth_np) == len(ext) == len(intr):
        raise ValueError(
            f"frame counts differ: depth {len(depth_np)}, extrinsic {len(ext)}, intrinsic {len(intr)}"
        )
    h, w = depth_np.shape[1:]
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    cam_to_world = closed_form_inverse_se3(ext)
    out = []
    for d, k, c2w in zip(depth_np, intr, cam_to_world, strict=True):
        x = (u - k[0, 2]) * d / k[0, 0]
        y = (v - k[1, 2]) * d / k[1, 1]
        cam = np.stack((x, y, d), axis=-1).astype(np.float32)
        out.append(np.dot(cam, c2w[:3, :3].T) + c2w[:3, 3])
    return np.stack(out, axis=0).astype(np.float32, copy=False)
