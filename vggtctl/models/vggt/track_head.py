"""VGGT track head: a DPT feature extractor at half resolution plus the iterative tracker.

Keys (``feature_extractor.*``, ``tracker.*``) match ``track_head.*`` of facebook/VGGT-1B in name,
shape and order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from vggtctl.errors import InputError, UsageError

from .dpt_head import DPTHead
from .tracker import TrackerPredictor


class TrackHead(nn.Module):
    """Track query points of frame 0 through every frame.

    Args:
        dim_in: width of the aggregated tokens (2 × embed_dim).
        patch_size: ViT patch size.
        features: latent feature channels of the extractor and tracker.
        iters: default refinement iterations.
        predict_conf: also predict a per-point confidence.
        stride: feature-map down ratio (the extractor runs at 1/stride resolution).
        corr_levels: correlation pyramid levels.
        corr_radius: correlation window radius.
        hidden_size: update transformer width.
        dpt_out_channels: channels of the extractor's four projections.
    """

    def __init__(
        self,
        dim_in: int,
        patch_size: int = 14,
        features: int = 128,
        iters: int = 4,
        predict_conf: bool = True,
        stride: int = 2,
        corr_levels: int = 7,
        corr_radius: int = 4,
        hidden_size: int = 384,
        dpt_out_channels: Sequence[int] = (256, 512, 1024, 1024),
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.iters = iters
        self.feature_extractor = DPTHead(
            dim_in,
            patch_size=patch_size,
            features=features,
            out_channels=tuple(dpt_out_channels),
            feature_only=True,
            down_ratio=stride,
            pos_embed=False,
        )
        self.tracker = TrackerPredictor(
            stride=stride,
            corr_levels=corr_levels,
            corr_radius=corr_radius,
            latent_dim=features,
            hidden_size=hidden_size,
            predict_conf=predict_conf,
        )

    @property
    def min_image_side(self) -> int:
        """Shortest image side the correlation pyramid accepts (128 px for the 1B layout)."""
        return self.tracker.min_map_size * self.tracker.stride

    def forward(
        self,
        aggregated_tokens_list: Sequence[Tensor | None],
        images: Tensor,
        patch_start_idx: int,
        query_points: Tensor,
        iters: int | None = None,
    ) -> tuple[list[Tensor], Tensor, Tensor | None]:
        """Track ``query_points`` through the frames of ``images``.

        Args:
            aggregated_tokens_list: aggregator outputs (layers 4, 11, 17, 23 must be present).
            images: ``[B, S, 3, H, W]`` in [0, 1].
            patch_start_idx: index of the first patch token per frame.
            query_points: ``[B, N, 2]`` (or ``[N, 2]`` for every batch item) pixel (x, y) on frame 0,
                within ``[0, W] × [0, H]``.
            iters: refinement iterations (default: ``self.iters``).

        Returns:
            ``(coord_preds, vis, conf)``: ``iters`` tensors ``[B, S, N, 2]`` (the last is the track),
            ``vis [B, S, N]`` and ``conf [B, S, N]`` in (0, 1) (``conf`` is ``None`` without
            ``predict_conf``).

        Raises:
            InputError: malformed or out-of-image queries, or images too small for the pyramid.
            UsageError: ``iters`` < 1.
        """
        iters = self.iters if iters is None else iters
        if iters < 1:
            raise UsageError(f"track iterations must be >= 1, got {iters}", hint="Leave iters unset (4).")
        queries = self.validate_queries(query_points, images)
        fmaps = self.feature_extractor(aggregated_tokens_list, images, patch_start_idx)
        return self.tracker(queries, fmaps, iters=iters)

    def validate_queries(self, query_points: Tensor | np.ndarray | None, images: Tensor) -> Tensor:
        """Check queries against ``images [B, S, 3, H, W]``; see :func:`check_track_queries`."""
        if images.ndim != 5:
            raise InputError(
                f"track head expects images [B, S, 3, H, W], got shape {tuple(images.shape)}",
                hint="Pass frames as [S, 3, H, W] or [B, S, 3, H, W] to the model.",
            )
        batch, _, _, height, width = images.shape
        queries = check_track_queries(
            query_points, batch=batch, height=height, width=width, min_side=self.min_image_side
        )
        return queries.to(images.device)


def check_track_queries(
    query_points: Tensor | np.ndarray | Sequence[Sequence[float]] | None,
    *,
    batch: int,
    height: int,
    width: int,
    min_side: int = 128,
) -> Tensor:
    """Validate track queries for ``batch`` sequences of ``height`` × ``width`` images.

    Args:
        query_points: ``[N, 2]`` (shared by every sequence) or ``[B, N, 2]`` pixel (x, y) on frame 0.
        batch: number of sequences B.
        height: model image height H.
        width: model image width W.
        min_side: shortest image side the correlation pyramid accepts.

    Returns:
        ``[B, N, 2]`` floating tensor (float32 unless a wider float was given).

    Raises:
        InputError: images shorter than ``min_side``, a malformed query array, or a query that is
            not finite or lies outside ``[0, W] × [0, H]``; the message names the offending value.
    """
    if min(height, width) < min_side:
        raise InputError(
            f"tracking needs images at least {min_side} px on the short side (the correlation pyramid "
            f"halves the half-resolution feature map down to one pixel), got {height}×{width} (H×W)",
            hint=f"Track on frames whose short side is at least {min_side} px (e.g. the default 518-px "
            "preprocessing of a non-panoramic photo), or run without query points.",
        )
    if query_points is None:
        raise InputError("the track head needs query points, got None", hint="Pass query_points [N, 2].")
    queries = torch.as_tensor(query_points)
    if not queries.is_floating_point():
        queries = queries.to(torch.float32)
    shape = tuple(queries.shape)
    shared = queries.ndim == 2
    if shared:
        queries = queries[None]
    if queries.ndim != 3 or queries.shape[-1] != 2:
        raise InputError(
            f"query points must have shape [N, 2] or [B, N, 2], got {list(shape)}",
            hint="Pass pixel (x, y) pairs of frame 0, one row per point.",
        )
    if queries.shape[0] not in (1, batch):
        raise InputError(
            f"query points are given for {queries.shape[0]} sequences but the images hold {batch}",
            hint="Pass [N, 2] (the same points for every sequence) or [B, N, 2] with B matching the images.",
        )
    if queries.shape[1] == 0:
        raise InputError("no query points given (N = 0)", hint="Pass at least one (x, y) point.")
    queries = queries.expand(batch, -1, -1)
    x, y = queries[..., 0], queries[..., 1]
    bad = ~(torch.isfinite(x) & torch.isfinite(y) & (x >= 0) & (x <= width) & (y >= 0) & (y <= height))
    if bool(bad.any()):
        b, n = (int(i) for i in bad.nonzero()[0])
        count = int(bad[b].sum())
        others = f" ({count - 1} more outside)" if count > 1 else ""
        where = "" if shared or batch == 1 else f" of sequence {b}"
        raise InputError(
            f"query point {n}{where} (x={float(x[b, n]):g}, y={float(y[b, n]):g}) lies outside the "
            f"{width}×{height} (W×H) model image{others}",
            hint=f"Query points are pixel (x, y) of frame 0 in the preprocessed image, 0 ≤ x ≤ {width}, "
            f"0 ≤ y ≤ {height}; map original pixels with the frame's ImageGeometry (x · scale_x + offset_x).",
        )
    return queries
