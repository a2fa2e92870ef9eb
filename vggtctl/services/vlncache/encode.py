"""Live VGGT features of samples: JanusVLN's preprocessing, then the streaming (or causal) pass.

Preprocessing is JanusVLN's ``load_and_preprocess_images(mode="crop")`` with the target edited to 644:
width 644 by PIL bicubic on uint8, height ``round(H·644/W / 14)·14`` (490 for 640×480), centre crop
above the target, values /255 in [0, 1]. The ImageNet normalisation happens once, inside the aggregator.
A value is the current frame's layer-``L`` patch tokens (frame ‖ global), ``[h·w, 2C]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from vggtctl.data.preprocess import load_images
from vggtctl.models.vggt.model import VGGT

from .spec import CacheSpec

_TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def storage_dtype(spec: CacheSpec) -> torch.dtype:
    return _TORCH_DTYPES[spec.dtype]


class FeatureEncoder:
    """Computes sample values with a loaded model under a spec (the model stays frozen, in eval mode)."""

    def __init__(self, model: VGGT, spec: CacheSpec) -> None:
        self.model = model
        self.spec = spec
        self.device = next(model.parameters()).device
        self.psi = model.aggregator.patch_start_idx

    def images(self, frames: Sequence[Path]) -> Tensor:
        """``[S, 3, H, W]`` in [0, 1] on the model's device, preprocessed as the spec says."""
        arr, _ = load_images(list(frames), mode=self.spec.mode, target_size=self.spec.image_width)
        return torch.from_numpy(arr).to(self.device)

    def _value(self, tokens: Tensor, height: int, width: int) -> tuple[Tensor, tuple[int, int]]:
        grid = (height // self.model.aggregator.patch_size, width // self.model.aggregator.patch_size)
        value = tokens[self.psi :].to(storage_dtype(self.spec)).cpu().contiguous()
        return value, grid

    def stream(
        self, frames: Sequence[Path], emit: Sequence[int]
    ) -> dict[int, tuple[Tensor, tuple[int, int]]]:
        """One streaming pass over ``frames``; the value after each frame index in ``emit``."""
        images = self.images(frames)
        wanted = set(emit)
        stream = self.model.aggregator.stream(layers=(self.spec.layer,))
        out: dict[int, tuple[Tensor, tuple[int, int]]] = {}
        for t in range(max(wanted) + 1):
            layer_out = stream.step(images[t])[self.spec.layer]
            if t in wanted:
                assert layer_out is not None
                out[t] = self._value(layer_out[0, 0], images.shape[-2], images.shape[-1])
        return out

    def causal(self, frames: Sequence[Path]) -> tuple[Tensor, tuple[int, int]]:
        """The reference value: one frame-causal full pass over the sample's frames, the last frame's tokens.

        With ``history="per-image"`` only the current frame goes through (no history).
        """
        frames = list(frames) if self.spec.history == "streaming" else list(frames)[-1:]
        images = self.images(frames)
        with torch.no_grad():
            outputs, _ = self.model.aggregator(images, layers=(self.spec.layer,), causal=True)
        tokens = outputs[self.spec.layer]
        assert tokens is not None
        return self._value(tokens[0, -1], images.shape[-2], images.shape[-1])
