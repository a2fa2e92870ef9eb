"""DPT head: four aggregator layers → dense prediction (depth, world points) or features (track).

Per chunk of frames: patch tokens of layers (4, 11, 17, 23) → one shared LayerNorm → 1×1
projections (+ UV sin/cos pos-embed) → resize ×4, ×2, ×1, ÷2 → 3×3 ``layer*_rn`` (no bias) →
RefineNet fusion (4 → 1, bilinear align_corners=True) → ``output_conv1`` → bilinear to the image
size (÷ ``down_ratio``) → pos-embed → ``output_conv2`` → activation (last channel = confidence).

Quirk kept from the reference: its ResidualConvUnit's first ReLU is in place, so the skip adds
``relu(x)``: ``RCU(x) = relu(x) + conv2(relu(conv1(relu(x))))``.

Frames are processed in chunks (``frames_chunk_size``): the result is the same, memory is bounded.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import conv1x1_tokens

_INT_MAX = 2**31 - 1
# NHWC convolutions are faster on CPU (oneDNN) and avoid a copy after the token→map permute.
_CHANNELS_LAST = True


def set_channels_last(enabled: bool) -> bool:
    """Switch NHWC (channels-last) convolutions in DPT heads; returns the old setting."""
    global _CHANNELS_LAST
    old, _CHANNELS_LAST = _CHANNELS_LAST, bool(enabled)
    return old


def _relu(x: Tensor) -> Tensor:
    # In inference the reference's in-place ReLU is safe and saves a full-resolution copy.
    return F.relu(x, inplace=not torch.is_grad_enabled())


def interpolate_bilinear(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear, align_corners=True; split along the batch when the output would overflow int32 indexing."""
    if x.shape[-2:] == size:
        return x
    n_out = x.shape[0] * x.shape[1] * size[0] * size[1]
    if n_out <= _INT_MAX or x.shape[0] == 1:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
    per = max(1, _INT_MAX // (x.shape[1] * size[0] * size[1]))
    parts = [F.interpolate(c, size=size, mode="bilinear", align_corners=True) for c in x.split(per)]
    return torch.cat(parts, dim=0)


def _sincos_1d(n: int, span: float, channels: int, device: torch.device) -> Tensor:
    """``[channels, n]`` = [sin(p·ω), cos(p·ω)] over n linspace points, ω_i = 1/100^(i/(channels/2)), × 0.1."""
    coords = torch.linspace(
        -span * (n - 1) / n, span * (n - 1) / n, steps=n, dtype=torch.float32, device=device
    )
    quarter = channels // 2
    omega = torch.arange(quarter, dtype=torch.float64, device=device) / quarter
    omega = 1.0 / 100.0**omega
    angles = coords.double()[:, None] * omega[None, :]
    emb = torch.cat((angles.sin(), angles.cos()), dim=1).float()
    return (emb * 0.1).t()


def add_pos_embed(x: Tensor, image_w: int, image_h: int) -> Tensor:
    """Add the reference's UV sin/cos embedding (ratio 0.1) to ``x [N, C, h, w]``.

    The embedding is separable (first C/2 channels depend on the column only, the last C/2 on the
    row only), so it is built as two small tables and broadcast instead of a full ``[C, h, w]`` map.
    """
    n, c, h, w = x.shape
    aspect = image_w / image_h
    diag = (aspect**2 + 1.0) ** 0.5
    ex = _sincos_1d(w, aspect / diag, c // 2, x.device).to(x.dtype)  # [C/2, w]
    ey = _sincos_1d(h, 1.0 / diag, c // 2, x.device).to(x.dtype)  # [C/2, h]
    half = c // 2
    if torch.is_grad_enabled() and x.requires_grad:
        return torch.cat((x[:, :half] + ex[None, :, None, :], x[:, half:] + ey[None, :, :, None]), dim=1)
    x[:, :half] += ex[None, :, None, :]
    x[:, half:] += ey[None, :, :, None]
    return x


def activate_head(out: Tensor, activation: str, conf_activation: str) -> tuple[Tensor, Tensor]:
    """Channels-last activation: last channel = confidence, the others = prediction."""
    fmap = out.permute(0, 2, 3, 1)
    xyz, conf = fmap[..., :-1], fmap[..., -1]
    if activation == "exp":
        pred = torch.exp(xyz)
    elif activation == "inv_log":
        pred = torch.sign(xyz) * torch.expm1(torch.abs(xyz))
    elif activation == "norm_exp":
        d = xyz.norm(dim=-1, keepdim=True).clamp(min=1e-8)
        pred = xyz / d * torch.expm1(d)
    elif activation == "norm":
        pred = xyz / xyz.norm(dim=-1, keepdim=True)
    elif activation == "relu":
        pred = F.relu(xyz)
    elif activation == "sigmoid":
        pred = torch.sigmoid(xyz)
    elif activation == "linear":
        pred = xyz
    else:
        raise ValueError(f"unknown DPT activation {activation!r}")
    if conf_activation == "expp1":
        conf_out = 1 + conf.exp()
    elif conf_activation == "expp0":
        conf_out = conf.exp()
    elif conf_activation == "sigmoid":
        conf_out = torch.sigmoid(conf)
    else:
        raise ValueError(f"unknown DPT confidence activation {conf_activation!r}")
    return pred, conf_out


class ResidualConvUnit(nn.Module):
    """``relu(x) + conv2(relu(conv1(relu(x))))`` (3×3 convs with bias)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, 1, 1, bias=True)
        self.conv2 = nn.Conv2d(features, features, 3, 1, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        x = _relu(x)
        return self.conv2(_relu(self.conv1(x))) + x


class FeatureFusionBlock(nn.Module):
    """RefineNet fusion: ``x0 (+ RCU1(x1))`` → RCU2 → bilinear resize → 1×1 ``out_conv``."""

    def __init__(self, features: int, has_residual: bool = True) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1, 1, 0, bias=True)
        self.resConfUnit1 = ResidualConvUnit(features) if has_residual else None
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x0: Tensor, x1: Tensor | None = None, size: tuple[int, int] | None = None) -> Tensor:
        out = x0
        if x1 is not None and self.resConfUnit1 is not None:
            out = out + self.resConfUnit1(x1)
        out = self.resConfUnit2(out)
        target = size if size is not None else (out.shape[-2] * 2, out.shape[-1] * 2)
        return self.out_conv(interpolate_bilinear(out, target))


class DPTHead(nn.Module):
    """Dense prediction head over four aggregator layers.

    Args:
        dim_in: Width of the aggregated tokens (2 × embed_dim).
        patch_size: ViT patch size.
        output_dim: Output channels including the confidence (4 points, 2 depth).
        activation: Prediction activation (``inv_log``, ``exp``, ``norm_exp``, ``norm``, ``relu``, ``sigmoid``, ``linear``).
        conf_activation: Confidence activation (``expp1``, ``expp0``, ``sigmoid``).
        features: Fusion width.
        out_channels: Projection widths of the four layers.
        intermediate_layer_idx: Aggregator layers read.
        pos_embed: Add the UV sin/cos embedding after the projections and after the final resize.
        feature_only: Return the ``[B, S, C, H/down, W/down]`` feature map (track head).
        down_ratio: Output resolution divisor.
    """

    def __init__(
        self,
        dim_in: int,
        patch_size: int = 14,
        output_dim: int = 4,
        activation: str = "inv_log",
        conf_activation: str = "expp1",
        features: int = 256,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        intermediate_layer_idx: Sequence[int] = (4, 11, 17, 23),
        pos_embed: bool = True,
        feature_only: bool = False,
        down_ratio: int = 1,
    ) -> None:
        super().__init__()
        oc = tuple(out_channels)
        self.patch_size = patch_size
        self.activation = activation
        self.conf_activation = conf_activation
        self.pos_embed = pos_embed
        self.feature_only = feature_only
        self.down_ratio = down_ratio
        self.intermediate_layer_idx = tuple(intermediate_layer_idx)
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, c, 1, 1, 0) for c in oc)
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4, padding=0),
                nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2, padding=0),
                nn.Identity(),
                nn.Conv2d(oc[3], oc[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        scratch = nn.Module()
        for i, c in enumerate(oc, start=1):
            setattr(scratch, f"layer{i}_rn", nn.Conv2d(c, features, 3, 1, 1, bias=False))
        scratch.refinenet1 = FeatureFusionBlock(features)
        scratch.refinenet2 = FeatureFusionBlock(features)
        scratch.refinenet3 = FeatureFusionBlock(features)
        scratch.refinenet4 = FeatureFusionBlock(features, has_residual=False)
        if feature_only:
            scratch.output_conv1 = nn.Conv2d(features, features, 3, 1, 1)
        else:
            scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, 1, 1)
            scratch.output_conv2 = nn.Sequential(
                nn.Conv2d(features // 2, 32, 3, 1, 1),
                nn.ReLU(inplace=True),
                nn.Conv2d(32, output_dim, 1, 1, 0),
            )
        self.scratch = scratch

    def forward(
        self,
        aggregated_tokens_list: Sequence[Tensor | None],
        images: Tensor,
        patch_start_idx: int,
        frames_chunk_size: int | None = 8,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Predict from the aggregated tokens.

        Args:
            aggregated_tokens_list: Aggregator outputs ``[B, S, P, dim_in]`` (the 4 read layers present).
            images: ``[B, S, 3, H, W]`` (only the size is used).
            patch_start_idx: First patch token index per frame.
            frames_chunk_size: Frames per chunk (None or 0: all at once). Same result either way.

        Returns:
            ``features [B, S, C, H/down, W/down]`` when ``feature_only``, else
            ``(pred [B, S, H, W, output_dim-1], conf [B, S, H, W])``.
        """
        missing = [i for i in self.intermediate_layer_idx if aggregated_tokens_list[i] is None]
        if missing:
            raise ValueError(f"DPT head needs aggregator layers {missing}, which were not computed")
        s = images.shape[1]
        if not frames_chunk_size or frames_chunk_size >= s:
            return self._forward(aggregated_tokens_list, images, patch_start_idx, 0, s)
        chunks = [
            self._forward(aggregated_tokens_list, images, patch_start_idx, i, min(i + frames_chunk_size, s))
            for i in range(0, s, frames_chunk_size)
        ]
        if self.feature_only:
            return torch.cat(chunks, dim=1)  # type: ignore[arg-type]
        return torch.cat([c[0] for c in chunks], dim=1), torch.cat([c[1] for c in chunks], dim=1)

    def _forward(
        self, tokens_list: Sequence[Tensor | None], images: Tensor, patch_start_idx: int, start: int, end: int
    ) -> Tensor | tuple[Tensor, Tensor]:
        b = images.shape[0]
        s = end - start
        height, width = images.shape[-2:]
        ph, pw = height // self.patch_size, width // self.patch_size
        fmt = torch.channels_last if _CHANNELS_LAST else torch.contiguous_format
        feats = []
        for k, layer in enumerate(self.intermediate_layer_idx):
            x = tokens_list[layer][:, start:end, patch_start_idx:]  # type: ignore[index]
            x = self.norm(x.reshape(b * s, ph * pw, x.shape[-1]).float())
            x = conv1x1_tokens(x, self.projects[k], ph, pw).contiguous(memory_format=fmt)
            if self.pos_embed:
                x = add_pos_embed(x, width, height)
            feats.append(self.resize_layers[k](x))
        out = self._fuse(feats)
        out = interpolate_bilinear(
            out, (int(ph * self.patch_size / self.down_ratio), int(pw * self.patch_size / self.down_ratio))
        )
        if self.pos_embed:
            out = add_pos_embed(out, width, height)
        if self.feature_only:
            out = out.contiguous()
            return out.view(b, s, *out.shape[1:])
        out = self.scratch.output_conv2(out)
        pred, conf = activate_head(out, self.activation, self.conf_activation)
        pred = pred.contiguous()
        return pred.view(b, s, *pred.shape[1:]), conf.contiguous().view(b, s, *conf.shape[1:])

    def _fuse(self, feats: list[Tensor]) -> Tensor:
        sc = self.scratch
        l1, l2, l3, l4 = (getattr(sc, f"layer{i}_rn")(f) for i, f in enumerate(feats, start=1))
        feats.clear()
        out = sc.refinenet4(l4, size=tuple(l3.shape[-2:]))
        del l4
        out = sc.refinenet3(out, l3, size=tuple(l2.shape[-2:]))
        del l3
        out = sc.refinenet2(out, l2, size=tuple(l1.shape[-2:]))
        del l2
        out = sc.refinenet1(out, l1)
        del l1
        return sc.output_conv1(out)
