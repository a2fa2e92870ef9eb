"""The iterative point tracker inside VGGT's track head (checkpoint-compatible with facebook/VGGT-1B).

Given normed feature maps of S frames and query points on frame 0, the tracker refines per-frame
coordinates over a few iterations: each iteration samples a correlation pyramid around the current
coordinates, embeds the flows, and lets an update transformer (time attention along each track plus
space attention through 64 learned "virtual tracks") predict coordinate and feature deltas.

Module and parameter names mirror the reference exactly (``corr_mlp``, ``updateformer.virual_tracks``
[sic], ``time_blocks``, ``space_*_blocks``, ``fmap_norm``, ``ffeat_norm``, ``ffeat_updater.0``,
``vis_predictor.0``, ``conf_predictor.0``) so the 1B state_dict loads key for key.

Where this differs from the reference, it does so only in the order of floating point operations:
- correlation is computed only on the (2r+2)² integer pixels around each sample window instead of
  over the whole map (bilinear sampling is linear, so sampling features then correlating equals
  correlating then sampling), which makes the cost independent of the image size;
- the 2-D sin/cos positional table is evaluated only at the query locations (it is separable, so its
  bilinear sample is a 1-D interpolation per axis), once per forward instead of once per iteration.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Flows are also fed raw, scaled by the reference's training image size.
_FLOW_SCALE = 518.0
# Bytes of gathered correlation patches (or full correlation maps) per chunk of queries: bounds
# memory for many queries or frames.
_CORR_CHUNK_BYTES = 64 * 2**20
# Pyramid levels up to this many pixels are correlated with one GEMM over the whole map; larger
# ones gather the window taps' feature vectors (memory-bound, but independent of the map size).
_FULL_CORR_MAX_PIXELS = 8192


class Mlp(nn.Module):
    """Two linear layers with an exact GELU in between (keys ``fc1``, ``fc2``)."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def multihead_attention(mha: nn.MultiheadAttention, x: Tensor, context: Tensor | None = None) -> Tensor:
    """Batch-first multi-head attention with the parameters of ``mha``, computed through SDPA.

    Numerically the same as ``mha(x, ctx, ctx)`` but never materialises (or head-averages) the
    attention weights, and takes one fused projection for self-attention.

    Args:
        mha: the ``nn.MultiheadAttention`` holding ``in_proj_weight/in_proj_bias/out_proj``.
        x: queries ``[B, Lq, D]``.
        context: keys/values ``[B, Lk, D]``; ``None`` for self-attention.

    Returns:
        ``[B, Lq, D]``.
    """
    dim, heads = mha.embed_dim, mha.num_heads
    weight, bias = mha.in_proj_weight, mha.in_proj_bias
    if context is None:
        q, k, v = F.linear(x, weight, bias).chunk(3, dim=-1)
    else:
        q = F.linear(x, weight[:dim], None if bias is None else bias[:dim])
        k, v = F.linear(context, weight[dim:], None if bias is None else bias[dim:]).chunk(2, dim=-1)
    batch, len_q, len_k = x.shape[0], x.shape[1], k.shape[1]
    q = q.reshape(batch, len_q, heads, dim // heads).transpose(1, 2)
    k = k.reshape(batch, len_k, heads, dim // heads).transpose(1, 2)
    v = v.reshape(batch, len_k, heads, dim // heads).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v)
    return mha.out_proj(out.transpose(1, 2).reshape(batch, len_q, dim))


class AttnBlock(nn.Module):
    """Self-attention block. Quirk kept from the reference: x is replaced by norm1(x) before the residual."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.attn = nn.MultiheadAttention(hidden_size, num_heads, bias=True, batch_first=True)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm1(x)
        x = x + multihead_attention(self.attn, x)
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):
    """Cross-attention block (queries x, keys/values context); x is replaced by norm1(x) as in the reference."""

    def __init__(self, hidden_size: int, context_dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size)
        self.norm_context = nn.LayerNorm(context_dim)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.cross_attn = nn.MultiheadAttention(
            hidden_size, num_heads, bias=True, batch_first=True, kdim=context_dim, vdim=context_dim
        )
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x = self.norm1(x)
        context = self.norm_context(context)
        x = x + multihead_attention(self.cross_attn, x, context)
        return x + self.mlp(self.norm2(x))


class EfficientUpdateFormer(nn.Module):
    """Update transformer: time attention along each track, space attention through virtual tracks.

    Args:
        space_depth: number of space steps (each: virtual←points, virtual↔virtual, points←virtual).
        time_depth: number of time blocks; a space step follows every ``time_depth // space_depth``-th.
        input_dim: width of the per-(track, frame) input (3·latent + 4).
        hidden_size: transformer width.
        num_heads: attention heads.
        output_dim: 2 coordinate deltas + latent feature deltas.
        mlp_ratio: MLP expansion.
        num_virtual_tracks: learned extra tracks that carry information between the real ones.
    """

    def __init__(
        self,
        space_depth: int = 6,
        time_depth: int = 6,
        input_dim: int = 388,
        hidden_size: int = 384,
        num_heads: int = 8,
        output_dim: int = 130,
        mlp_ratio: float = 4.0,
        num_virtual_tracks: int = 64,
    ) -> None:
        super().__init__()
        if space_depth < 1 or time_depth < space_depth:
            raise ValueError(f"need 1 <= space_depth <= time_depth, got {space_depth} and {time_depth}")
        self.num_virtual_tracks = num_virtual_tracks
        self.input_norm = nn.LayerNorm(input_dim)
        self.input_transform = nn.Linear(input_dim, hidden_size)
        self.output_norm = nn.LayerNorm(hidden_size)
        self.flow_head = nn.Linear(hidden_size, output_dim)
        # The misspelt name is the checkpoint's.
        self.virual_tracks = nn.Parameter(torch.randn(1, num_virtual_tracks, 1, hidden_size))
        self.time_blocks = nn.ModuleList(
            [AttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(time_depth)]
        )
        self.space_virtual_blocks = nn.ModuleList(
            [AttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(space_depth)]
        )
        self.space_point2virtual_blocks = nn.ModuleList(
            [CrossAttnBlock(hidden_size, hidden_size, num_heads, mlp_ratio) for _ in range(space_depth)]
        )
        self.space_virtual2point_blocks = nn.ModuleList(
            [CrossAttnBlock(hidden_size, hidden_size, num_heads, mlp_ratio) for _ in range(space_depth)]
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        # Small initial deltas keep an untrained tracker close to the identity.
        nn.init.trunc_normal_(self.flow_head.weight, std=0.001)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``[B, N, S, input_dim]`` to ``[B, N, S, output_dim]``."""
        batch, num_points, frames, _ = x.shape
        tokens = self.input_transform(self.input_norm(x))
        init_tokens = tokens
        dim = tokens.shape[-1]
        virtual = self.virual_tracks.to(tokens.dtype).expand(batch, -1, frames, -1)
        tokens = torch.cat([tokens, virtual], dim=1)
        total = tokens.shape[1]
        space_every = len(self.time_blocks) // len(self.space_virtual_blocks)
        step = 0
        for i, time_block in enumerate(self.time_blocks):
            tokens = time_block(tokens.reshape(batch * total, frames, dim)).view(batch, total, frames, dim)
            if i % space_every != 0:
                continue
            space = tokens.permute(0, 2, 1, 3).reshape(batch * frames, total, dim)
            points, virtual = space[:, :num_points], space[:, num_points:]
            virtual = self.space_virtual2point_blocks[step](virtual, points)
            virtual = self.space_virtual_blocks[step](virtual)
            points = self.space_point2virtual_blocks[step](points, virtual)
            space = torch.cat([points, virtual], dim=1)
            tokens = space.view(batch, frames, total, dim).permute(0, 2, 1, 3)
            step += 1
        tokens = tokens[:, :num_points] + init_tokens
        return self.flow_head(self.output_norm(tokens))


def sincos_1d(pos: Tensor, dim: int) -> Tensor:
    """1-D sin/cos embedding of positions ``[...]`` → ``[..., dim]``: sin block then cos block, base 10000.

    Computed in float64 (positions and frequencies) like the reference table, so callers cast once.
    """
    omega = torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    angle = pos.to(torch.float64)[..., None] * omega
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


def sample_pos_embed(coords: Tensor, dim: int, height: int, width: int) -> Tensor:
    """Bilinear sample (border padding, align_corners=True) of the 2-D sin/cos table at ``coords``.

    The reference builds a ``[dim, height, width]`` table whose first ``dim/2`` channels encode the
    column (x) and the last ``dim/2`` the row (y), then grid-samples it. Because the table is
    separable, the sample is a 1-D linear interpolation per axis between the two neighbouring
    integer positions, so only those are evaluated.

    Args:
        coords: ``[..., 2]`` (x, y) in feature-map pixels.
        dim: table width (divisible by 4).
        height: feature-map height.
        width: feature-map width.

    Returns:
        ``[..., dim]`` float64 (the reference rounds its float64 table once, to the model dtype).
    """

    def axis(c: Tensor, size: int) -> Tensor:
        c = c.to(torch.float64).clamp(0, size - 1)
        lo = c.floor()
        hi = torch.clamp(lo + 1, max=size - 1)
        frac = (c - lo)[..., None]
        return (1 - frac) * sincos_1d(lo, dim // 2) + frac * sincos_1d(hi, dim // 2)

    return torch.cat([axis(coords[..., 0], width), axis(coords[..., 1], height)], dim=-1)


def flow_embedding(flows: Tensor, dim: int) -> Tensor:
    """Embed 2-D flows ``[..., 2]`` as ``[..., dim + 4]``.

    Per axis ``dim/2`` channels with sin at even and cos at odd positions, frequencies
    ``arange(0, dim/2, 2) · 1000/(dim/2)`` (linear, as in the reference); x block then y block;
    then the raw flows / 518, twice.

    The highest frequency is ~900 rad per map pixel, so the embedding (and everything after the
    first iteration) reacts to coordinate changes of one float32 ulp: two correct float32
    implementations agree on the first iteration and then drift apart (see docs/track.md).
    """
    # At least float32 (the reference's precision): frequencies reach ~900 rad/px, so half
    # precision would turn the embedding into noise.
    dtype = torch.promote_types(flows.dtype, torch.float32)
    flows = flows.to(dtype)
    half = dim // 2
    div = torch.arange(0, half, 2, device=flows.device, dtype=dtype) * (1000.0 / half)
    blocks = []
    for axis in range(2):
        angle = flows[..., axis : axis + 1] * div
        blocks.append(torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1).flatten(-2))
    scaled = flows / _FLOW_SCALE
    return torch.cat([*blocks, scaled, scaled], dim=-1)


def _window_axis(c: Tensor, size: int, radius: int) -> tuple[Tensor, Tensor]:
    """Integer taps and interpolation weights of one axis of a (2r+1)-sample window at ``c + [-r..r]``.

    Matches ``grid_sample(bilinear, align_corners=True, padding_mode="zeros")``: taps outside
    ``[0, size)`` get weight 0. A map of size 1 along this axis maps every coordinate to index 0
    (the reference normalises by ``max(size - 1, 1)`` and align_corners then un-normalises by 0).

    Args:
        c: window centres ``[M]`` (float32).
        size: map size along the axis.
        radius: r.

    Returns:
        ``(idx [M, 2r+2] long in [0, size), weight [M, 2r+1, 2r+2])``.
    """
    taps, samples = 2 * radius + 2, 2 * radius + 1
    if size == 1:
        idx = torch.zeros(c.shape[0], taps, dtype=torch.long, device=c.device)
        weight = torch.zeros(c.shape[0], samples, taps, dtype=c.dtype, device=c.device)
        weight[:, :, 0] = 1
        return idx, weight
    # Beyond r + 1 px outside the map every tap is padding; clamping there keeps the integer
    # conversion safe for diverged (huge or NaN) coordinates without changing any result.
    c = torch.nan_to_num(c, nan=-(radius + 2.0)).clamp(-(radius + 2.0), size + radius + 1.0)
    base = c.floor()
    frac = (c - base)[:, None, None]
    raw = base.to(torch.long)[:, None] - radius + torch.arange(taps, device=c.device)
    valid = ((raw >= 0) & (raw < size)).to(c.dtype)[:, None, :]
    identity = torch.eye(taps, dtype=c.dtype, device=c.device)
    eye, shifted = identity[:-1], identity[1:]  # ones at (k, k) and (k, k + 1)
    weight = ((1 - frac) * eye + frac * shifted) * valid
    return raw.clamp(0, size - 1), weight


class CorrelationPyramid:
    """Average-pooled pyramid of feature maps and windowed correlation sampling.

    Per level, the (2r+2)² integer taps around each window are correlated with the track feature
    and bilinearly blended into the (2r+1)² samples. Large levels gather the taps' feature vectors
    (cost independent of the map size); small levels correlate against the whole map with one GEMM
    and gather scalars, which is cheaper there.

    Args:
        fmaps: ``[F, H, W, C]`` normed feature maps of F frames, channels last.
        levels: pyramid levels (level i is pooled ``i`` times by 2).
        radius: window radius r; each level yields ``(2r+1)²`` samples.
    """

    def __init__(self, fmaps: Tensor, levels: int, radius: int) -> None:
        frames, _, _, channels = fmaps.shape
        self.radius = radius
        self.channels = channels
        self.frames = frames
        self.sizes: list[tuple[int, int]] = []
        self.maps: list[Tensor] = []
        # avg_pool2d keeps the channels_last layout, so every level stays [F, H·W, C] without copies
        # and each gathered tap is one contiguous C-vector.
        current = fmaps.permute(0, 3, 1, 2)
        for level in range(levels):
            if level:
                current = F.avg_pool2d(current, kernel_size=2, stride=2)
            h, w = current.shape[-2:]
            self.sizes.append((h, w))
            self.maps.append(current.permute(0, 2, 3, 1).reshape(frames, h * w, channels))

    def sample(self, targets: Tensor, coords: Tensor) -> Tensor:
        """Correlation of each target feature with its frame's map around its coordinates.

        Args:
            targets: ``[F, N, C]`` track features, N per frame.
            coords: ``[F, N, 2]`` (x, y) in level-0 map pixels.

        Returns:
            ``[F, N, levels·(2r+1)²]``: per level, the (2r+1)² samples with the x offset varying
            slowest (the reference window adds its row offset to x), levels concatenated.
        """
        num = targets.shape[1]
        taps = 2 * self.radius + 2
        per_query = (
            max(taps * taps * self.channels, _FULL_CORR_MAX_PIXELS) * self.frames * targets.element_size()
        )
        chunk = max(1, _CORR_CHUNK_BYTES // per_query)
        scaled = targets / math.sqrt(self.channels)
        coords = coords.to(torch.promote_types(coords.dtype, torch.float32))
        out = [self._sample(scaled[:, i : i + chunk], coords[:, i : i + chunk]) for i in range(0, num, chunk)]
        return torch.cat(out, dim=1)

    def _sample(self, targets: Tensor, coords: Tensor) -> Tensor:
        frames, num, channels = targets.shape
        taps = 2 * self.radius + 2
        rows = frames * num
        per_level = []
        for level, ((h, w), fmap) in enumerate(zip(self.sizes, self.maps, strict=True)):
            lvl = (coords / 2**level).reshape(rows, 2)
            idx_x, wx = _window_axis(lvl[:, 0], w, self.radius)
            idx_y, wy = _window_axis(lvl[:, 1], h, self.radius)
            index = (idx_y[:, :, None] * w + idx_x[:, None, :]).view(frames, num * taps * taps)
            if h * w <= _FULL_CORR_MAX_PIXELS:
                corr = torch.bmm(targets, fmap.transpose(1, 2))  # [F, N, h·w]
                corr = torch.gather(corr.view(frames, -1), 1, _row_offsets(index, num, h * w))
            else:
                flat_index = index + torch.arange(frames, device=index.device)[:, None] * (h * w)
                patch = F.embedding(flat_index.reshape(-1), fmap.reshape(-1, channels))
                corr = torch.bmm(patch.view(rows, taps * taps, channels), targets.reshape(rows, channels, 1))
            # corr[a, b]: tap row a (y), tap column b (x);
            # out[i, j] = Σ_ab wx[i, b] · corr[a, b] · wy[j, a]: i is the x offset, j the y offset.
            corr = corr.reshape(rows, taps, taps)
            wx, wy = wx.to(corr.dtype), wy.to(corr.dtype)
            per_level.append(torch.bmm(torch.bmm(wx, corr.transpose(1, 2)), wy.transpose(1, 2)).flatten(1))
        return torch.cat(per_level, dim=1).view(frames, num, -1)


def _row_offsets(index: Tensor, num: int, pixels: int) -> Tensor:
    """Turn per-query pixel indices ``[F, N·T]`` into indices into the flattened ``[F, N·pixels]`` maps."""
    frames, total = index.shape
    per_query = total // num
    query = torch.arange(num, device=index.device).repeat_interleave(per_query)
    return index + query[None, :] * pixels


class TrackerPredictor(nn.Module):
    """Iterative tracker (the reference's ``BaseTrackerPredictor``) for feature maps ``[B, S, C, H, W]``.

    Args:
        stride: query pixels per feature-map pixel (the feature extractor's down ratio).
        corr_levels: pyramid levels L.
        corr_radius: window radius r.
        latent_dim: feature channels C.
        hidden_size: update transformer width (also the correlation MLP's hidden width).
        depth: time and space depth of the update transformer.
        max_scale: divisor of the raw flows fed to the transformer.
        predict_conf: build ``conf_predictor``.
    """

    def __init__(
        self,
        stride: int = 2,
        corr_levels: int = 7,
        corr_radius: int = 4,
        latent_dim: int = 128,
        hidden_size: int = 384,
        depth: int = 6,
        max_scale: float = 518.0,
        predict_conf: bool = True,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.latent_dim = latent_dim
        self.corr_levels = corr_levels
        self.corr_radius = corr_radius
        self.max_scale = max_scale
        self.predict_conf = predict_conf
        self.transformer_dim = 3 * latent_dim + 4
        self.corr_mlp = Mlp(corr_levels * (2 * corr_radius + 1) ** 2, hidden_size, latent_dim)
        self.query_ref_token = nn.Parameter(torch.randn(1, 2, self.transformer_dim))
        self.updateformer = EfficientUpdateFormer(
            space_depth=depth,
            time_depth=depth,
            input_dim=self.transformer_dim,
            hidden_size=hidden_size,
            output_dim=latent_dim + 2,
        )
        self.fmap_norm = nn.LayerNorm(latent_dim)
        self.ffeat_norm = nn.GroupNorm(1, latent_dim)
        self.ffeat_updater = nn.Sequential(nn.Linear(latent_dim, latent_dim), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(latent_dim, 1))
        if predict_conf:
            self.conf_predictor = nn.Sequential(nn.Linear(latent_dim, 1))

    @property
    def min_map_size(self) -> int:
        """Smallest feature-map side that survives the pyramid's poolings with one pixel left."""
        return 2 ** (self.corr_levels - 1)

    def forward(
        self, query_points: Tensor, fmaps: Tensor, iters: int = 4
    ) -> tuple[list[Tensor], Tensor, Tensor | None]:
        """Track ``query_points`` (pixels of frame 0) through all frames.

        Args:
            query_points: ``[B, N, 2]`` pixel (x, y) on frame 0, in image pixels (``stride`` × map pixels).
            fmaps: ``[B, S, C, H, W]`` feature maps (not yet normed).
            iters: refinement iterations.

        Returns:
            ``(coord_preds, vis, conf)``: a list of ``iters`` ``[B, S, N, 2]`` image-pixel tracks (frame 0
            equals the queries exactly), ``vis [B, S, N]``, ``conf [B, S, N]`` (``None`` without
            ``conf_predictor``), both after a sigmoid.
        """
        batch, num_points, _ = query_points.shape
        _, frames, channels, height, width = fmaps.shape
        # Channels last from here on: the norm is over C and the pyramid gathers C-vectors.
        fmaps = self.fmap_norm(fmaps.permute(0, 1, 3, 4, 2).reshape(batch * frames, height, width, channels))
        dtype = fmaps.dtype
        # Coordinates stay at least float32 even for a half-precision model: bf16 cannot hold pixels.
        coord_dtype = torch.promote_types(query_points.dtype, torch.float32)
        queries = query_points.to(device=fmaps.device, dtype=coord_dtype) / float(self.stride)

        # Internal layout is track-major [B, N, S, ...], the update transformer's.
        query_feats = _sample_border(fmaps.view(batch, frames, height, width, channels)[:, 0], queries)
        track_feats = query_feats[:, :, None].expand(batch, num_points, frames, channels)
        coords = queries[:, :, None].expand(batch, num_points, frames, 2)
        pos = sample_pos_embed(queries, self.transformer_dim, height, width).to(dtype)
        pos = pos.reshape(batch * num_points, 1, self.transformer_dim)
        ref = self.query_ref_token.to(dtype)
        ref = torch.cat([ref[:, :1], ref[:, 1:].expand(-1, frames - 1, -1)], dim=1)
        pyramid = CorrelationPyramid(fmaps, self.corr_levels, self.corr_radius)
        del fmaps

        coord_preds: list[Tensor] = []
        rows = batch * num_points
        for _ in range(iters):
            coords = coords.detach()
            # The pyramid works frame-major: [B·S, N, ...].
            corr = pyramid.sample(
                track_feats.transpose(1, 2).reshape(batch * frames, num_points, channels),
                coords.transpose(1, 2).reshape(batch * frames, num_points, 2),
            )
            corr = corr.view(batch, frames, num_points, -1).transpose(1, 2).reshape(rows, frames, -1)
            corr = self.corr_mlp(corr)
            flows = (coords - coords[:, :, :1]).reshape(rows, frames, 2)
            flows_emb = flow_embedding(flows, self.latent_dim).to(dtype)
            x = torch.cat([flows_emb, corr, track_feats.reshape(rows, frames, channels)], dim=-1)
            x = (x + pos) + ref
            delta = self.updateformer(x.view(batch, num_points, frames, -1))
            delta_feats = delta[..., 2:].reshape(-1, channels)
            track_feats = (
                self.ffeat_updater(self.ffeat_norm(delta_feats)) + track_feats.reshape(-1, channels)
            ).view(batch, num_points, frames, channels)
            coords = coords + delta[..., :2].to(coord_dtype)
            # Frame 0 is the query frame: its coordinates are pinned to the queries every iteration.
            coords = torch.cat([queries[:, :, None], coords[:, :, 1:]], dim=2)
            coord_preds.append((coords * self.stride).transpose(1, 2))

        feats = track_feats.transpose(1, 2)  # [B, S, N, C]
        vis = torch.sigmoid(self.vis_predictor(feats).squeeze(-1))
        conf = torch.sigmoid(self.conf_predictor(feats).squeeze(-1)) if self.predict_conf else None
        return coord_preds, vis, conf


def _sample_border(fmap: Tensor, xy: Tensor) -> Tensor:
    """Bilinear sample of ``fmap [B, H, W, C]`` at ``xy [B, N, 2]`` map pixels → ``[B, N, C]``.

    Same as ``grid_sample(align_corners=True, padding_mode="border")``: coordinates are clamped to
    the map, then the four neighbouring pixels are blended.
    """
    batch, height, width, channels = fmap.shape
    dtype = torch.promote_types(fmap.dtype, torch.float32)
    x = xy[..., 0].to(dtype).clamp(0, width - 1)
    y = xy[..., 1].to(dtype).clamp(0, height - 1)
    x0, y0 = x.floor(), y.floor()
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=width - 1), (y0 + 1).clamp(max=height - 1)
    rows = fmap.reshape(batch, height * width, channels)

    def tap(yi: Tensor, xi: Tensor) -> Tensor:
        return torch.gather(rows, 1, (yi * width + xi)[..., None].expand(-1, -1, channels)).to(dtype)

    out = (1 - fy) * ((1 - fx) * tap(y0, x0) + fx * tap(y0, x1)) + fy * (
        (1 - fx) * tap(y1, x0) + fx * tap(y1, x1)
    )
    return out.to(fmap.dtype)
