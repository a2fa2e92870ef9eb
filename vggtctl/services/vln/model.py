"""The VLN model: stock ``Qwen2_5_VLForConditionalGeneration`` + the VGGT merger, fused via ``inputs_embeds``.

VGGT itself is *not* a submodule: it is frozen, runs under ``no_grad`` (or is replaced by the feature
cache) and would otherwise be wrapped, partitioned and gathered by DeepSpeed for nothing. The model takes
each sample's VGGT tokens as input.

Forward: token embeddings; Qwen's image features (``get_image_features``); ``+ λ · merger(regroup(VGGT))``
(:func:`~vggtctl.services.vln.fusion.fuse_image_embeds`); scattered at the ``<|image_pad|>`` positions;
3-D mRoPE positions from Qwen's own ``get_rope_index``; the LLM with ``inputs_embeds``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from vggtctl.errors import InputError
from vggtctl.services.vln.fusion import VggtMerger, fuse_image_embeds, regroup


@dataclass(frozen=True)
class Spatial:
    """One sample's VGGT tokens ``[h·w, C]`` and their patch grid."""

    tokens: Tensor
    h: int
    w: int


@dataclass(frozen=True)
class TrainGroups:
    """Which parts train. The Qwen ViT blocks and VGGT are always frozen."""

    llm: bool = True
    qwen_merger: bool = True
    vggt_merger: bool = True


class VlnModel(nn.Module):
    """Qwen2.5-VL + VGGT merger.

    Args:
        qwen: A ``Qwen2_5_VLForConditionalGeneration``.
        context_dim: VGGT token width (2 × aggregator width).
        merger_hidden: Hidden width of the VGGT merger.
        lam: Fusion weight λ.
        tile: Add the current frame's 3D tokens to every image of a sample (JanusVLN) or to the current one.
    """

    def __init__(
        self, qwen: Any, context_dim: int, merger_hidden: int, lam: float, tile: bool = True
    ) -> None:
        super().__init__()
        self.qwen = qwen
        text = qwen.config.text_config
        self.merge = qwen.config.vision_config.spatial_merge_size
        self.vggt_merger = VggtMerger(context_dim, merger_hidden, text.hidden_size, self.merge)
        self.lam = lam
        self.tile = tile
        self.image_token_id = qwen.config.image_token_id

    # -- parameter groups ---------------------------------------------------------------------------------
    def llm_parameters(self) -> list[tuple[str, nn.Parameter]]:
        inner = self.qwen.model
        named = [("qwen.model.language_model." + n, p) for n, p in inner.language_model.named_parameters()]
        named += [("qwen.lm_head." + n, p) for n, p in self.qwen.lm_head.named_parameters()]
        return named

    def qwen_merger_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [
            ("qwen.model.visual.merger." + n, p) for n, p in self.qwen.model.visual.merger.named_parameters()
        ]

    def vggt_merger_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [("vggt_merger." + n, p) for n, p in self.vggt_merger.named_parameters()]

    def set_trainable(self, groups: TrainGroups) -> None:
        """Freeze everything, then unfreeze the chosen groups."""
        for p in self.parameters():
            p.requires_grad_(False)
        for on, named in (
            (groups.llm, self.llm_parameters()),
            (groups.qwen_merger, self.qwen_merger_parameters()),
            (groups.vggt_merger, self.vggt_merger_parameters()),
        ):
            if on:
                for _, p in named:
                    p.requires_grad_(True)

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """The parameters that train, by their name in this module."""
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    # -- forward ------------------------------------------------------------------------------------------
    def merged_spatial(self, spatial: Sequence[Spatial]) -> list[Tensor]:
        """Each sample's VGGT tokens through the regroup and the merger: ``[n, D]`` per sample."""
        dtype = self.vggt_merger.fc1.weight.dtype
        return [self.vggt_merger(regroup(s.tokens.to(dtype), s.h, s.w, self.merge)) for s in spatial]

    def inputs_embeds(
        self,
        input_ids: Tensor,
        pixel_values: Tensor,
        image_grid_thw: Tensor,
        images_per_sample: Sequence[int],
        spatial: Sequence[Spatial] | None,
    ) -> Tensor:
        """Token embeddings with the (fused) image embeddings at the image-pad positions.

        With ``spatial=None`` the result is stock Qwen's (no 3D branch): the fusion test compares both.
        """
        embeds = self.qwen.get_input_embeddings()(input_ids)
        features = self.qwen.model.get_image_features(pixel_values, image_grid_thw, return_dict=True)
        per_image = list(features.pooler_output)
        if spatial is None:
            image_embeds = torch.cat(per_image)
        else:
            merged = self.merged_spatial(spatial)
            image_embeds = fuse_image_embeds(per_image, merged, images_per_sample, self.lam, self.tile)
        mask = input_ids == self.image_token_id
        if int(mask.sum()) != image_embeds.shape[0]:
            raise InputError(
                f"the prompt has {int(mask.sum())} image-pad tokens but the images give {image_embeds.shape[0]}",
                "tokenise with the model's tokenizer and image processor (train-vln does)",
            )
        return embeds.masked_scatter(mask[..., None].expand_as(embeds), image_embeds.to(embeds.dtype))

    def position_ids(self, input_ids: Tensor, image_grid_thw: Tensor, attention_mask: Tensor) -> Tensor:
        """Qwen's 3-D mRoPE positions ``[3, B, L]`` for the sequence and its images."""
        token_types = (input_ids == self.image_token_id).to(torch.int)
        positions, _ = self.qwen.model.get_rope_index(
            input_ids, token_types, image_grid_thw=image_grid_thw, attention_mask=attention_mask
        )
        return positions

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        pixel_values: Tensor,
        image_grid_thw: Tensor,
        images_per_sample: Sequence[int],
        spatial: Sequence[Spatial] | None,
        labels: Tensor | None = None,
    ) -> Any:
        """Qwen's output (``.loss`` with labels, ``.logits``)."""
        embeds = self.inputs_embeds(input_ids, pixel_values, image_grid_thw, images_per_sample, spatial)
        positions = self.position_ids(input_ids, image_grid_thw, attention_mask)
        return self.qwen(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=positions,
            labels=labels,
            use_cache=False,
        )
