"""VGGT: aggregator + camera, point, depth and track heads, key-compatible with ``facebook/VGGT-1B``.

Mixed precision follows the reference: the aggregator runs under the caller's autocast (or under
its own when its weights were loaded in bfloat16/float16), while the camera, depth and point
heads always run in float32 (``torch.autocast(device_type, enabled=False)``). The track head
runs outside that block, as in the reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from vggtctl.errors import UsageError

from .aggregator import Aggregator
from .camera_head import CameraHead
from .config import VGGTConfig
from .dpt_head import DPTHead
from .inputs import normalize_layers, validate_images

if TYPE_CHECKING:  # pragma: no cover - the loader's record type; the model does not depend on it
    from vggtctl.services.provenance import Provenance

BLOCK_KINDS = ("frame", "global")
LORA_SUBLAYERS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


class VGGT(nn.Module):
    """Visual Geometry Grounded Transformer.

    Args:
        config: Structure and head switches (default: ``vggt-1b``). Disabled heads are ``None``
            and have no state-dict keys.
    """

    #: Where the weights came from: set by ``load_model``, a plain attribute (not in the state dict).
    #: Wrappers (DDP, torch.compile, PEFT) hide it; read it with ``provenance_of(model)``.
    provenance: Provenance | None = None

    def __init__(self, config: VGGTConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or VGGTConfig()
        dim_in = config.head_dim_in
        self.aggregator = Aggregator(config)
        self.camera_head = (
            CameraHead(
                dim_in,
                num_heads=config.camera_heads,
                trunk_depth=config.camera_trunk_depth,
                init_values=config.init_values,
                layer=config.camera_layer,
                iterations=config.camera_iterations,
            )
            if config.enable_camera
            else None
        )
        dpt = {
            "patch_size": config.patch_size,
            "features": config.dpt_features,
            "out_channels": config.dpt_out_channels,
            "intermediate_layer_idx": config.dpt_layers,
        }
        self.point_head = (
            DPTHead(dim_in, output_dim=4, activation="inv_log", conf_activation="expp1", **dpt)
            if config.enable_point
            else None
        )
        self.depth_head = (
            DPTHead(dim_in, output_dim=2, activation="exp", conf_activation="expp1", **dpt)
            if config.enable_depth
            else None
        )
        self.track_head = None
        if config.enable_track:
            # Imported here so a model without tracking never needs the tracker module.
            from .track_head import TrackHead

            self.track_head = TrackHead(
                dim_in,
                patch_size=config.patch_size,
                features=config.track_features,
                iters=config.track_iters,
                hidden_size=config.track_hidden_size,
                dpt_out_channels=config.dpt_out_channels,
            )

    def required_layers(self, with_track: bool = False) -> tuple[int, ...]:
        """Aggregator layers the enabled heads read (only these are kept alive during a forward)."""
        layers: set[int] = set()
        if self.camera_head is not None:
            layers.add(self.config.camera_layer)
        if (
            self.depth_head is not None
            or self.point_head is not None
            or (with_track and self.track_head is not None)
        ):
            layers.update(self.config.dpt_layers)
        return tuple(sorted(layers))

    def forward(
        self, images: Tensor | np.ndarray, query_points: Tensor | np.ndarray | None = None
    ) -> dict[str, object]:
        """Predict cameras, depth, point maps (and tracks) for each sequence of frames.

        Args:
            images: ``[S, 3, H, W]`` or ``[B, S, 3, H, W]`` float in [0, 1]; H, W multiples of 14.
                Frame 0 of each sequence is the reference frame (world = its camera frame).
            query_points: Optional ``[N, 2]`` or ``[B, N, 2]`` pixel (x, y) on frame 0 to track.

        Returns:
            ``pose_enc [B,S,9]``, ``pose_enc_list`` (one per camera iteration), ``depth [B,S,H,W,1]``,
            ``depth_conf [B,S,H,W]``, ``world_points [B,S,H,W,3]``, ``world_points_conf [B,S,H,W]``,
            ``images [B,S,3,H,W]`` (eval mode only) and, with query points, ``track [B,S,N,2]``,
            ``vis [B,S,N]``, ``conf [B,S,N]``. Keys of disabled heads are absent.

        Raises:
            InputError: Bad images or query points (shape, rank, size, range of queries, too small to track).
            UsageError: Query points for a model without a track head.
        """
        images = validate_images(images, self.config.patch_size)
        queries = None
        if query_points is not None:
            if self.track_head is None:
                raise UsageError(
                    "query points were given but this model has no track head (enable_track=False)",
                    "load the full checkpoint (all heads) or drop the query points",
                )
            queries = self.track_head.validate_queries(query_points, images)
        layers = self.required_layers(with_track=queries is not None)
        preds: dict[str, object] = {}
        if layers:
            tokens = self.aggregator.run(images, normalize_layers(layers, self.config.depth))
            psi = self.aggregator.patch_start_idx
            with torch.autocast(images.device.type, enabled=False):
                if self.camera_head is not None:
                    pose_enc_list = self.camera_head(tokens)
                    preds["pose_enc"] = pose_enc_list[-1]
                    preds["pose_enc_list"] = pose_enc_list
                chunk = self.config.dpt_frames_chunk_size
                if self.depth_head is not None:
                    preds["depth"], preds["depth_conf"] = self.depth_head(
                        tokens, images, psi, frames_chunk_size=chunk
                    )
                if self.point_head is not None:
                    preds["world_points"], preds["world_points_conf"] = self.point_head(
                        tokens, images, psi, frames_chunk_size=chunk
                    )
            if queries is not None and self.track_head is not None:
                track_list, vis, conf = self.track_head(tokens, images, psi, queries)
                preds["track"] = track_list[-1]
                preds["vis"] = vis
                preds["conf"] = conf
            del tokens
        if not self.training:
            preds["images"] = images
        return preds

    def block_module_names(
        self, kinds: Sequence[str] = BLOCK_KINDS, indices: Iterable[int] | None = None
    ) -> list[str]:
        """Module names of aggregator blocks, e.g. ``aggregator.frame_blocks.3`` (for LoRA / freezing).

        Args:
            kinds: ``"frame"``, ``"global"`` and/or ``"patch_embed"`` (the DINOv2 blocks).
            indices: Block indices (negative count from the end); all when None.
        """
        return aggregator_block_names(self.config, kinds, indices)

    def lora_target_names(
        self,
        kinds: Sequence[str] = BLOCK_KINDS,
        indices: Iterable[int] | None = None,
        sublayers: Sequence[str] = LORA_SUBLAYERS,
    ) -> list[str]:
        """Linear-layer names inside the selected blocks, e.g. ``aggregator.global_blocks.7.attn.qkv``."""
        return [f"{b}.{s}" for b in self.block_module_names(kinds, indices) for s in sublayers]


def aggregator_block_names(
    config: VGGTConfig, kinds: Sequence[str] = BLOCK_KINDS, indices: Iterable[int] | None = None
) -> list[str]:
    """Module names of aggregator blocks for a config (see :meth:`VGGT.block_module_names`).

    Raises:
        UsageError: Unknown kind or an index outside the block range.
    """
    prefixes = {
        "frame": ("aggregator.frame_blocks", config.depth),
        "global": ("aggregator.global_blocks", config.depth),
        "patch_embed": ("aggregator.patch_embed.blocks", config.patch_embed_depth),
    }
    out: list[str] = []
    for kind in kinds:
        if kind not in prefixes:
            raise UsageError(f"unknown block kind {kind!r}", f"use one of {', '.join(prefixes)}")
        prefix, depth = prefixes[kind]
        idx = range(depth) if indices is None else normalize_layers(indices, depth)
        out.extend(f"{prefix}.{i}" for i in idx)
    return out
