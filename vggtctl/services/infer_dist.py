"""Many devices: the frames of one scene split across ranks, tokens gathered only for global attention.

VGGT's frame-local parts (DINOv2 patch embed, the 24 frame-attention blocks, the DPT heads) see one
frame at a time, so each rank runs them on its own contiguous slice of frames. Each global-attention
block needs every frame's keys and values: the ranks ``all_gather`` their tokens, and each computes the
block's output for its own frames only (its queries against all keys), so attention and MLP work is
split too; only the qkv projection of the gathered tokens is repeated on every rank. The camera head
attends across frames but reads one token per frame: rank 0 gathers those and runs it. Outputs are
gathered to every rank (rank 0 writes them).

Works with any ``torch.distributed`` backend (gloo on CPU, nccl on GPUs); started by torchrun or the
shared launcher, one process per device. Frame 0 (the reference frame) always lives on rank 0.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from vggtctl.errors import UsageError


def split_frames(frames: int, world: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, end)`` per rank, sizes differing by at most one (earlier ranks get the extra).

    Raises:
        UsageError: More ranks than frames (a rank would have nothing to do).
    """
    if world < 1 or frames < world:
        raise UsageError(
            f"{frames} frame(s) cannot be split across {world} devices",
            "use at most as many devices (--nproc-per-node) as frames",
        )
    base, extra = divmod(frames, world)
    out, start = [], 0
    for r in range(world):
        n = base + (1 if r < extra else 0)
        out.append((start, start + n))
        start += n
    return out


def _gather_frames(x: Any, sizes: list[int], group: Any = None) -> Any:
    """All-gather ``x [B, s_r, ...]`` (frame dim 1, sizes per rank) into ``[B, S, ...]``."""
    import torch
    import torch.distributed as dist

    most = max(sizes)
    pad = most - x.shape[1]
    xp = x
    if pad:
        xp = torch.cat((x, x.new_zeros((x.shape[0], pad, *x.shape[2:]))), dim=1)
    parts = [torch.empty_like(xp) for _ in sizes]
    dist.all_gather(parts, xp.contiguous(), group=group)
    return torch.cat([p[:, :n] for p, n in zip(parts, sizes, strict=True)], dim=1)


def _global_block_local(block: Any, x_all: Any, a: int, b: int, p: int, rope: Any) -> Any:
    """``block`` on the gathered tokens ``[B, S*P, C]``, output only for frames ``[a, b)``: ``[B, (b-a)*P, C]``.

    Same arithmetic as ``Block.forward`` (pre-norm attention and MLP with LayerScale), with the queries
    restricted to the local frames; SDPA's result per query does not depend on the other queries.
    """
    import torch.nn.functional as F

    from vggtctl.models.vggt.layers import _scaled_residual, linear
    from vggtctl.models.vggt.rope import apply_rope

    attn = block.attn
    bsz, n, c = x_all.shape
    qkv = linear(block.norm1(x_all), attn.qkv).view(bsz, n, 3, attn.num_heads, attn.head_dim)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    q = q[:, :, a * p : b * p]
    if attn.q_norm is not None and attn.k_norm is not None:
        q, k = attn.q_norm(q), attn.k_norm(k)
    if rope is not None:
        q, k = apply_rope(q, rope), apply_rope(k, rope)
    out = F.scaled_dot_product_attention(q, k, v)
    out = linear(out.transpose(1, 2).reshape(bsz, (b - a) * p, c), attn.proj)
    x = _scaled_residual(x_all[:, a * p : b * p], out, block.ls1)
    return _scaled_residual(x, block.mlp(block.norm2(x)), block.ls2)


def _aggregate_local(
    model: Any, images: Any, a: int, b: int, sizes: list[int], layers: tuple[int, ...]
) -> list:
    """The aggregator for frames ``[a, b)`` of ``images [1, S_local, 3, H, W]`` (already the local slice)."""
    import torch

    from vggtctl.models.vggt.layers import run_block
    from vggtctl.models.vggt.rope import FrameRope

    agg = model.aggregator
    bsz, s, _, height, width = images.shape
    h, w = height // agg.patch_size, width // agg.patch_size
    low = agg.compute_dtype
    ctx = (
        torch.autocast(images.device.type, dtype=low)
        if low in (torch.bfloat16, torch.float16)
        else contextlib.nullcontext()
    )
    with ctx:
        x = (images - agg._resnet_mean) / agg._resnet_std
        patch = agg.patch_embed(x.reshape(bsz * s, 3, height, width))
        # Slot 0 of the camera/register tokens belongs to the sequence's frame 0, which is on rank 0.
        slot = [0] + [1] * (s - 1) if a == 0 else [1] * s
        idx = torch.tensor(slot, device=images.device)
        cam = agg.camera_token[0, idx].reshape(s, *agg.camera_token.shape[2:])
        reg = agg.register_token[0, idx].reshape(s, *agg.register_token.shape[2:])
        tokens = torch.cat((cam.expand(bsz * s, -1, -1), reg.expand(bsz * s, -1, -1), patch), dim=1)
        p, c = tokens.shape[1], tokens.shape[2]
        rope = FrameRope(agg.rope, agg.head_dim, h, w, agg.patch_start_idx, images.device)
        outputs: list[Any] = [None] * agg.depth
        wanted = set(layers)
        for i in range(max(layers) + 1):
            tokens = run_block(agg.frame_blocks[i], tokens.reshape(bsz * s, p, c), rope, False)
            frame_out = tokens.reshape(bsz, s, p, c) if i in wanted else None
            everyone = _gather_frames(tokens.reshape(bsz, s, p, c), sizes).reshape(bsz, -1, c)
            tokens = _global_block_local(agg.global_blocks[i], everyone, a, b, p, rope)
            del everyone
            if frame_out is not None:
                outputs[i] = torch.cat((frame_out, tokens.reshape(bsz, s, p, c)), dim=-1)
    return outputs


def predict_distributed(
    model: Any, images: np.ndarray, *, device: str = "cpu", dtype: Any = None, group: Any = None
) -> dict[str, np.ndarray]:
    """:func:`vggtctl.services.infer.predict` with the frames split across the ranks of ``group``.

    Every rank passes the same ``images [S,3,H,W]`` (each uses its slice) and gets the same outputs.
    """
    import torch
    import torch.distributed as dist

    from vggtctl.models.vggt.geometry import pose_encoding_to_extri_intri, unproject_depth_map_to_point_map
    from vggtctl.models.vggt.inputs import normalize_layers
    from vggtctl.runtime.precision import autocast

    world, rank = dist.get_world_size(group), dist.get_rank(group)
    s_total, _, h, w = images.shape
    ranges = split_frames(int(s_total), world)
    sizes = [e - s for s, e in ranges]
    a, b = ranges[rank]
    x = torch.as_tensor(np.ascontiguousarray(images[a:b]), dtype=torch.float32, device=device)[None]
    layers = normalize_layers(model.required_layers(), model.config.depth)
    out: dict[str, Any] = {}
    with torch.inference_mode(), autocast(device, dtype):
        tokens = _aggregate_local(model, x, a, b, sizes, layers)
        psi = model.aggregator.patch_start_idx
        with torch.autocast(x.device.type, enabled=False):
            chunk = model.config.dpt_frames_chunk_size
            for head, keys in (
                (model.depth_head, ("depth", "depth_conf")),
                (model.point_head, ("world_points", "world_points_conf")),
            ):
                if head is not None:
                    pred, conf = head(tokens, x, psi, frames_chunk_size=chunk)
                    out[keys[0]] = _gather_frames(pred.contiguous(), sizes, group)
                    out[keys[1]] = _gather_frames(conf.contiguous(), sizes, group)
            if model.camera_head is not None:
                layer = model.camera_head.layer
                cam_tokens = _gather_frames(tokens[layer][:, :, :1].contiguous(), sizes, group)
                gathered: list[Any] = [None] * model.config.depth
                gathered[layer] = cam_tokens
                pose_list = model.camera_head(gathered)
                out["pose_enc"] = pose_list[-1]
                out["pose_enc_list"] = torch.stack(pose_list)
    preds = {k: v.detach().float().cpu().numpy()[0] for k, v in out.items() if k != "pose_enc_list"}
    if "pose_enc_list" in out:
        preds["pose_enc_list"] = out["pose_enc_list"].detach().float().cpu().numpy()[:, 0]
    preds["images"] = np.asarray(images, dtype=np.float32)
    if "pose_enc" in out:
        extrinsic, intrinsic = pose_encoding_to_extri_intri(out["pose_enc"].float(), (h, w))
        preds["extrinsic"] = extrinsic.cpu().numpy()[0]
        preds["intrinsic"] = intrinsic.cpu().numpy()[0]
        if "depth" in preds:
            preds["world_points_from_depth"] = np.asarray(
                unproject_depth_map_to_point_map(preds["depth"], preds["extrinsic"], preds["intrinsic"]),
                dtype=np.float32,
            )
    return preds
