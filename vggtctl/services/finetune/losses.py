"""VGGT's training objective, as the reference training code computes it (reference TRAINING.md).

Ground truth is re-expressed in the first camera's frame and divided by the mean distance of its valid
points (per sample); predictions are never normalized. Terms, each logged:

- ``loss_camera``: L1 on the pose encoding of every camera-head iteration (translation clamped at 100,
  quaternion, field of view x 0.5), iteration i weighted gamma^(n-1-i), divided by n;
- ``loss_conf_depth``: gamma·r·c - alpha·log c over valid pixels (r = |d^ - d|, c the depth confidence);
  98th-percentile outliers dropped (more than 1000 values); can be negative;
- ``loss_reg_depth``: mean r;
- ``loss_grad_depth``: L1 of horizontal and vertical differences of the masked residual at 4 scales;
- ``loss_point`` (off by default): the same regression on the point map;
- ``loss_objective``: camera_weight x camera + depth_weight x (conf + reg + grad) [+ point_weight x point].

Every term is a mean over the samples of the batch of per-sample values, so a batch split across processes
(DDP averages) gives the same gradients as one process holding it whole.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from vggtctl.models.vggt.geometry import extri_intri_to_pose_encoding
from vggtctl.services.finetune.config import LossSettings

_CLAMP = 100.0
_MIN_VALID = 100  # samples whose first frame has no more valid pixels are skipped


def _se3(ext: Tensor) -> Tensor:
    """``[..., 3, 4]`` -> ``[..., 4, 4]``."""
    bottom = torch.zeros(*ext.shape[:-2], 1, 4, dtype=ext.dtype, device=ext.device)
    bottom[..., 0, 3] = 1
    return torch.cat([ext, bottom], dim=-2)


def camera_points(depth: Tensor, intrinsics: Tensor) -> Tensor:
    """``[B,S,H,W]`` z-depth, ``[B,S,3,3]`` -> ``[B,S,H,W,3]`` points in each camera's frame."""
    b, s, h, w = depth.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=depth.dtype, device=depth.device),
        torch.arange(w, dtype=depth.dtype, device=depth.device),
        indexing="ij",
    )
    fx, fy = intrinsics[..., 0, 0, None, None], intrinsics[..., 1, 1, None, None]
    cx, cy = intrinsics[..., 0, 2, None, None], intrinsics[..., 1, 2, None, None]
    x = (xs - cx) / fx * depth
    y = (ys - cy) / fy * depth
    return torch.stack([x, y, depth], dim=-1)


def normalize_ground_truth(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Cameras relative to frame 0, points in frame 0's camera frame, everything divided by the mean distance.

    Args:
        batch: ``depth [B,S,H,W]``, ``valid [B,S,H,W]``, ``intrinsics [B,S,3,3]``, ``extrinsics [B,S,3,4]``
            (world-to-camera, metres).

    Returns:
        ``depth``, ``valid``, ``intrinsics``, ``extrinsics`` (relative, scaled), ``world_points``
        ``[B,S,H,W,3]`` (frame 0's camera frame, scaled) and ``scale [B]``.
    """
    depth = batch["depth"].double()
    valid = batch["valid"].bool()
    intr = batch["intrinsics"].double()
    ext = _se3(batch["extrinsics"].double())
    rel = ext @ torch.linalg.inv(ext[:, :1])  # E_i · E_0^-1: frame 0 becomes the identity
    cam = camera_points(depth, intr)  # [B,S,H,W,3] in camera i
    # camera i -> frame 0: p0 = (E_i E_0^-1)^-1 p_i
    inv = torch.linalg.inv(rel)
    r, t = inv[:, :, None, None, :3, :3], inv[:, :, None, None, :3, 3]
    world = (r @ cam[..., None])[..., 0] + t
    dist = world.norm(dim=-1)
    count = valid.flatten(1).sum(1).clamp(min=1)
    scale = ((dist * valid).flatten(1).sum(1) / count).clamp(1e-6, 1e6)
    s = scale[:, None, None, None]
    rel = rel.clone()
    rel[..., :3, 3] = rel[..., :3, 3] / scale[:, None, None]
    return {
        "depth": (depth / s).float(),
        "valid": valid,
        "intrinsics": intr.float(),
        "extrinsics": rel[..., :3, :].float(),
        "world_points": (world / s[..., None]).float(),
        "scale": scale.float(),
    }


def camera_loss(pose_enc_list: list[Tensor], gt: dict[str, Tensor], gamma: float) -> Tensor:
    """Per-sample ``[B]`` camera loss over the camera head's iterations."""
    h, w = gt["depth"].shape[-2:]
    target = extri_intri_to_pose_encoding(gt["extrinsics"], gt["intrinsics"], (h, w))
    n = len(pose_enc_list)
    total = torch.zeros(target.shape[0], device=target.device)
    for i, pred in enumerate(pose_enc_list):
        pred = pred.float()
        lt = (pred[..., :3] - target[..., :3]).abs().clamp(max=_CLAMP).mean(dim=(1, 2))
        lr = (pred[..., 3:7] - target[..., 3:7]).abs().mean(dim=(1, 2))
        lf = (pred[..., 7:] - target[..., 7:]).abs().mean(dim=(1, 2))
        total = total + gamma ** (n - 1 - i) * (lt + lr + 0.5 * lf)
    return total / n


def _drop_outliers(values: Tensor) -> Tensor:
    values = values.clamp(max=_CLAMP)
    if values.numel() > 1000:
        cut = torch.quantile(values.detach().float(), 0.98)
        values = values[values < cut]
    return values


def _gradient_term(residual: Tensor, valid: Tensor, scales: int) -> Tensor:
    """``residual [S,H,W,C]``, ``valid [S,H,W]`` -> L1 of finite differences at ``scales`` strides."""
    total = residual.new_zeros(())
    for k in range(scales):
        step = 2**k
        r, m = residual[:, ::step, ::step], valid[:, ::step, ::step]
        if r.shape[1] < 2 or r.shape[2] < 2:
            break
        r = r * m[..., None]
        dx = (r[:, :, 1:] - r[:, :, :-1]).abs().clamp(max=_CLAMP)
        mx = m[:, :, 1:] & m[:, :, :-1]
        dy = (r[:, 1:] - r[:, :-1]).abs().clamp(max=_CLAMP)
        my = m[:, 1:] & m[:, :-1]
        count = (mx.sum() + my.sum()).clamp(min=1)
        total = total + ((dx * mx[..., None]).sum() + (dy * my[..., None]).sum()) / count
    return total


def regression_terms(
    pred: Tensor, conf: Tensor, target: Tensor, valid: Tensor, settings: LossSettings
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample ``[B]`` (conf, reg, grad) terms; ``pred``/``target`` ``[B,S,H,W,C]``, ``conf``/``valid`` ``[B,S,H,W]``."""
    confs, regs, grads = [], [], []
    for b in range(pred.shape[0]):
        m = valid[b]
        residual = pred[b] - target[b]
        r = residual[m].norm(dim=-1)
        c = conf[b][m]
        if r.numel() == 0:
            zero = pred.sum() * 0
            confs.append(zero)
            regs.append(zero)
            grads.append(zero)
            continue
        confs.append(_drop_outliers(r * c - settings.conf_alpha * torch.log(c)).mean())
        regs.append(_drop_outliers(r).mean())
        grads.append(_gradient_term(residual, m, settings.grad_scales))
    return torch.stack(confs), torch.stack(regs), torch.stack(grads)


def objective(preds: dict[str, Any], batch: dict[str, Tensor], settings: LossSettings) -> dict[str, Tensor]:
    """Every loss term (batch means) and ``loss_objective``, the one to back-propagate."""
    gt = normalize_ground_truth(batch)
    keep = (gt["valid"][:, 0].flatten(1).sum(1) > _MIN_VALID).float()
    weight = keep / keep.sum().clamp(min=1)  # skipped samples count 0, the rest average
    out: dict[str, Tensor] = {}
    total = torch.zeros((), device=gt["depth"].device)
    if "pose_enc_list" in preds and settings.camera_weight > 0:
        cam = (camera_loss(preds["pose_enc_list"], gt, settings.camera_gamma) * weight).sum()
        out["loss_camera"] = cam
        total = total + settings.camera_weight * cam
    if settings.depth_weight > 0:
        conf, reg, grad = regression_terms(
            preds["depth"].float(), preds["depth_conf"].float(), gt["depth"][..., None], gt["valid"], settings
        )
        out["loss_conf_depth"] = (conf * weight).sum()
        out["loss_reg_depth"] = (reg * weight).sum()
        out["loss_grad_depth"] = (grad * weight).sum()
        total = total + settings.depth_weight * (
            out["loss_conf_depth"] + out["loss_reg_depth"] + out["loss_grad_depth"]
        )
    if settings.point_weight > 0 and "world_points" in preds:
        conf, reg, _ = regression_terms(
            preds["world_points"].float(),
            preds["world_points_conf"].float(),
            gt["world_points"],
            gt["valid"],
            LossSettings(**{**settings.__dict__, "grad_scales": 0}),
        )
        out["loss_point"] = ((conf + reg) * weight).sum()
        total = total + settings.point_weight * out["loss_point"]
    out["loss_objective"] = total
    return out
