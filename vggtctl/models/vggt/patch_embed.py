"""DINOv2 ViT with register tokens, the aggregator's patch embed (``aggregator.patch_embed.*``).

ViT-L/14 + 4 registers in ``facebook/VGGT-1B``: conv patchify, cls token, bicubic+antialias
pos-embed resize to the image's grid, registers inserted after cls (without pos-embed), pre-norm
blocks with LayerNorm eps 1e-6 and LayerScale, final LayerNorm. VGGT reads the normed patch tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import Block, run_block


class PatchEmbed(nn.Module):
    """Conv patchify (kernel = stride = patch size), flattened row-major → ``[N, h*w, C]``."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoV2Reg(nn.Module):
    """DINOv2 vision transformer with registers, returning the normed patch tokens.

    Args:
        img_size: Training size; the pos-embed grid is ``(img_size // patch_size)²``.
        patch_size: Patch size.
        embed_dim: Token width.
        depth: Number of blocks.
        num_heads: Attention heads.
        mlp_ratio: MLP hidden width / embed_dim.
        num_register_tokens: Register tokens inserted after cls.
    """

    def __init__(
        self,
        img_size: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        num_register_tokens: int = 4,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.grid = img_size // patch_size
        self.num_register_tokens = num_register_tokens
        self.gradient_checkpointing = True
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid * self.grid, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        # Used by DINOv2's masked pre-training only; kept so the checkpoint loads strictly.
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qk_norm=False, norm_eps=1e-6, init_values=1.0)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._pos_cache: dict[tuple[object, ...], Tensor] = {}
        if not self.pos_embed.is_meta:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            nn.init.normal_(self.cls_token, std=1e-6)
            nn.init.normal_(self.register_tokens, std=1e-6)

    def interpolate_pos_encoding(self, h: int, w: int) -> Tensor:
        """Pos-embed ``[1, 1 + h*w, C]`` for an h×w patch grid (cls position kept, grid resized).

        Bicubic with antialias in float32 via ``size=(h, w)``; skipped only for the training grid
        (square). Cached per grid while the weights are not being trained (it is a pure function of
        ``pos_embed``).
        """
        pe = self.pos_embed
        if h == w == self.grid:
            return pe
        cacheable = not (torch.is_grad_enabled() and pe.requires_grad)
        key = (h, w, pe.dtype, pe.device, pe.data_ptr(), pe._version)
        if cacheable and key in self._pos_cache:
            return self._pos_cache[key]
        dim = pe.shape[-1]
        full = pe.float()
        grid = full[:, 1:].reshape(1, self.grid, self.grid, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", antialias=True)
        grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, dim)
        out = torch.cat((full[:, :1], grid), dim=1).to(pe.dtype)
        if cacheable:
            self._pos_cache.clear()
            self._pos_cache[key] = out
        return out

    def forward(self, x: Tensor) -> Tensor:
        """``x [N, 3, H, W]`` (ImageNet-normalised) → normed patch tokens ``[N, h*w, C]``."""
        n, _, height, width = x.shape
        h, w = height // self.patch_size, width // self.patch_size
        tokens = self.patch_embed(x)
        tokens = torch.cat((self.cls_token.expand(n, -1, -1), tokens), dim=1)
        tokens = tokens + self.interpolate_pos_encoding(h, w)
        tokens = torch.cat((tokens[:, :1], self.register_tokens.expand(n, -1, -1), tokens[:, 1:]), dim=1)
        ckpt = self.training and self.gradient_checkpointing
        for block in self.blocks:
            tokens = run_block(block, tokens, None, ckpt)
        return self.norm(tokens)[:, 1 + self.num_register_tokens :]
