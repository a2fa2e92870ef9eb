"""The 3D branch of the VLN model: VGGT tokens -> 2×2 regroup -> merger -> added to Qwen's image tokens.

- :func:`regroup` crops the ``h×w`` VGGT grid to even sides (the top-left part, the same pixels Qwen's
  ViT sees, see :mod:`vggtctl.services.vln.frames`) and orders each 2×2 block as Qwen's patch merger
  does (block rows, block columns, then the 4 tokens of a block row-major).
- :class:`VggtMerger` is JanusVLN's projection: RMSNorm over the VGGT width (2048 for VGGT-1B), the 4
  tokens of a block side by side (8192), Linear -> GELU -> Linear to the LLM width.
- :func:`fuse_image_embeds` adds ``λ · merger(tokens)`` to Qwen's image embeddings of the sample.

Tiling: JanusVLN computes 3D tokens for the current frame only and adds that same tensor to *every* image
of the sample (``repeat(k, 1)``), assuming batch 1. vggtctl keeps that behaviour by default
(``tile_spatial=True``, faithful to the trained checkpoints) but does it per sample, so a batch of any
size is correct: sample i's 3D tokens go to sample i's images only. ``tile_spatial=False`` adds them to
the current image alone. Both need the images of a sample to have one size (trajectory frames do).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vggtctl.errors import InputError


def regroup(tokens: Tensor, h: int, w: int, merge: int = 2) -> Tensor:
    """``[h·w, C]`` patch tokens -> ``[(h//m)·(w//m), m², C]`` in Qwen's merger order."""
    c = tokens.shape[-1]
    if tokens.shape[0] != h * w:
        raise InputError(
            f"{tokens.shape[0]} tokens do not fill a {h}x{w} grid", "pass the patch grid of the frame"
        )
    h2, w2 = h // merge, w // merge
    if h2 == 0 or w2 == 0:
        raise InputError(
            f"a {h}x{w} patch grid is smaller than one {merge}x{merge} block", "use larger frames"
        )
    grid = tokens.reshape(h, w, c)[: h2 * merge, : w2 * merge]
    return grid.reshape(h2, merge, w2, merge, c).permute(0, 2, 1, 3, 4).reshape(h2 * w2, merge * merge, c)


class VggtMerger(nn.Module):
    """RMSNorm(C) -> concat the m² tokens of a block -> Linear(m²·C, hidden) -> GELU -> Linear(hidden, out).

    Args:
        context_dim: VGGT token width (2 × aggregator width: 2048 for VGGT-1B).
        hidden_dim: Width of the hidden layer (4096 in JanusVLN).
        out_dim: The LLM's hidden size (3584 for 7B, 2048 for 3B).
        merge: Spatial merge size (2, as Qwen's).
    """

    def __init__(self, context_dim: int, hidden_dim: int, out_dim: int, merge: int = 2) -> None:
        super().__init__()
        self.context_dim = context_dim
        self.merge = merge
        self.norm = nn.RMSNorm(context_dim, eps=1e-6)
        self.fc1 = nn.Linear(context_dim * merge * merge, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, blocks: Tensor) -> Tensor:
        """``[N, m², C]`` -> ``[N, out_dim]``."""
        return self.fc2(self.act(self.fc1(self.norm(blocks).flatten(1))))


def fuse_image_embeds(
    image_embeds: Sequence[Tensor],
    merged: Sequence[Tensor],
    images_per_sample: Sequence[int],
    lam: float,
    tile: bool = True,
) -> Tensor:
    """Qwen's per-image embeddings plus ``lam ·`` each sample's merged 3D tokens, concatenated.

    Args:
        image_embeds: One ``[n_j, D]`` per image of the batch, samples in order.
        merged: One ``[n, D]`` per sample (its current frame's 3D tokens after the merger).
        images_per_sample: How many images each sample has (they sum to ``len(image_embeds)``).
        lam: The weight λ (0.2 in JanusVLN).
        tile: Add the 3D tokens to every image of the sample (JanusVLN), or only to its last (current) one.

    Returns:
        ``[sum n_j, D]``, the values for the image-pad positions in order.
    """
    if sum(images_per_sample) != len(image_embeds) or len(merged) != len(images_per_sample):
        raise InputError(
            f"{len(image_embeds)} images and {len(merged)} 3D feature sets for samples of "
            f"{list(images_per_sample)} images",
            "each sample needs its images and one VGGT feature set",
        )
    out: list[Tensor] = []
    j = 0
    for i, k in enumerate(images_per_sample):
        for n in range(k):
            e = image_embeds[j]
            j += 1
            if tile or n == k - 1:
                m = merged[i]
                if m.shape != e.shape:
                    raise InputError(
                        f"sample {i}: image {n} has {e.shape[0]} LLM tokens but its 3D features give {m.shape[0]}",
                        "the frames of a sample must share one size, and Qwen and VGGT must see the same pixels",
                    )
                e = e + lam * m.to(e.dtype)
            out.append(e)
    return torch.cat(out)
