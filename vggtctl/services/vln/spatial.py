"""VGGT's spatial tokens for one sample: the only place the VLN model calls the frozen VGGT.

JanusVLN feeds a sample's frames (history first, the current frame last) through VGGT with a per-sample
KV cache, so the current frame's tokens have attended to the earlier frames, and keeps layer 22's patch
tokens of the current frame (``[h·w, 2C]``, the frame ‖ global halves). Here the sample's frames go
through :meth:`Aggregator.forward` in one frame-causal pass (``causal=True``: frame i's global attention
sees frames 0..i only), which is what the streaming K/V-cache pass computes frame by frame (the model's
streaming tests check they match), and the current frame's tokens are taken.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from vggtctl.errors import InputError

DEFAULT_LAYER = 22


@torch.no_grad()
def spatial_tokens(
    vggt: torch.nn.Module, frames: Tensor, layer: int = DEFAULT_LAYER
) -> tuple[Tensor, int, int]:
    """Layer-``layer`` patch tokens of the last frame of ``frames``.

    Args:
        vggt: A VGGT model (only its aggregator runs; eval mode, no grad).
        frames: ``[S, 3, H, W]`` in [0, 1], H and W multiples of 14; the last frame is the current one.
        layer: Aggregator layer (22 = JanusVLN's second-to-last of 24).

    Returns:
        ``(tokens [h·w, 2C], h, w)`` with ``h, w`` the patch grid.
    """
    if frames.dim() != 4 or frames.shape[0] < 1:
        raise InputError(
            f"expected frames [S, 3, H, W], got {tuple(frames.shape)}", "pass one sample's frames"
        )
    aggregator = vggt.aggregator
    aggregator.eval()
    patch = aggregator.patch_size
    h, w = frames.shape[-2] // patch, frames.shape[-1] // patch
    low = aggregator.compute_dtype
    ctx = (
        torch.autocast(frames.device.type, dtype=low)
        if low in (torch.bfloat16, torch.float16)
        else contextlib.nullcontext()
    )
    with ctx:
        outputs, start = aggregator(frames[None].to(torch.float32), layers=(layer,), causal=True)
    tokens = outputs[layer][0, -1, start:]
    return tokens, h, w
