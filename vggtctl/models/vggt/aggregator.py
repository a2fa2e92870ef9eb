"""The VGGT aggregator: DINOv2 patch tokens + camera/register tokens through alternating attention.

Per frame the tokens are ``[camera (1), registers (R), patches (h*w)]`` (``patch_start_idx`` =
1 + R). Slot 0 of ``camera_token``/``register_token`` is used for the first frame of each
sequence only, slot 1 for the others. Block pair i runs frame attention on ``[B*S, P, C]`` and
then global attention on ``[B, S*P, C]``; layer output i is ``frame_out_i ‖ global_out_i``
``[B, S, P, 2C]``.

Only requested layers are materialised (and only up to the deepest one is computed), so memory
grows with what a consumer reads, not with depth. All frames go through in one pass.

``causal=True`` makes the global blocks frame-causal (a query of frame i sees the tokens of frames
0..i only), as JanusVLN runs VGGT; frame blocks are per frame anyway. This masked pass is the reference
that the streaming path (:mod:`.streaming`, one frame at a time with a per-layer K/V cache) matches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .config import VGGTConfig
from .inputs import normalize_layers, validate_images
from .layers import Block, run_block
from .patch_embed import DinoV2Reg
from .rope import FrameRope, Rope2D

if TYPE_CHECKING:  # pragma: no cover
    from .streaming import AggregatorStream, KVWindow

DPT_LAYERS = (4, 11, 17, 23)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_LOW_PRECISION = (torch.bfloat16, torch.float16)


def _special_tokens(token: Tensor, b: int, s: int, first_frame: bool = True) -> Tensor:
    """``[1, 2, X, C]`` → ``[B*S, X, C]``: slot 0 for frame 0 of each sequence, slot 1 for the rest.

    ``first_frame=False`` (a streamed frame after the first) uses slot 1 for every frame.
    """
    if not first_frame:
        return token[:, 1:].expand(b, s, *token.shape[2:]).reshape(b * s, *token.shape[2:])
    first = token[:, :1].expand(b, 1, *token.shape[2:])
    rest = token[:, 1:].expand(b, s - 1, *token.shape[2:])
    return torch.cat((first, rest), dim=1).reshape(b * s, *token.shape[2:])


def frame_causal_mask(frames: int, tokens_per_frame: int, device: torch.device) -> Tensor:
    """Boolean ``[S*P, S*P]`` mask, True where query frame i may attend key frame j (j ≤ i)."""
    frame_of = torch.arange(frames, device=device).repeat_interleave(tokens_per_frame)
    return frame_of[:, None] >= frame_of[None, :]


class Aggregator(nn.Module):
    """Alternating frame/global attention over the frames of each sequence.

    Args:
        config: The model config (widths, depth, heads, registers, RoPE frequency).
    """

    def __init__(self, config: VGGTConfig) -> None:
        super().__init__()
        c = config.embed_dim
        self.depth = config.depth
        self.patch_size = config.patch_size
        self.embed_dim = c
        self.head_dim = c // config.num_heads
        self.patch_start_idx = config.patch_start_idx
        self.gradient_checkpointing = config.gradient_checkpointing
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, c))
        self.register_token = nn.Parameter(torch.zeros(1, 2, config.num_register_tokens, c))
        if (
            not self.camera_token.is_meta
        ):  # random init on meta would load torch's Python decompositions (~3 s)
            nn.init.normal_(self.camera_token, std=1e-6)
            nn.init.normal_(self.register_token, std=1e-6)
        self.patch_embed = DinoV2Reg(
            config.img_size,
            config.patch_size,
            config.patch_embed_dim,
            config.patch_embed_depth,
            config.patch_embed_heads,
            config.mlp_ratio,
            config.num_register_tokens,
        )
        self.patch_embed.gradient_checkpointing = config.gradient_checkpointing

        def blocks() -> nn.ModuleList:
            return nn.ModuleList(
                Block(c, config.num_heads, config.mlp_ratio, qk_norm=True, init_values=config.init_values)
                for _ in range(config.depth)
            )

        self.frame_blocks = blocks()
        self.global_blocks = blocks()
        self.rope = Rope2D(config.rope_freq)
        self.register_buffer("_resnet_mean", torch.empty(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("_resnet_std", torch.empty(1, 1, 3, 1, 1), persistent=False)
        self.reset_buffers()

    def reset_buffers(self, device: torch.device | str | None = None) -> None:
        """(Re)create the non-persistent ImageNet mean/std buffers, e.g. after a meta-device build."""
        device = torch.device(device) if device is not None else self._resnet_mean.device
        if device.type == "meta":
            return
        self._resnet_mean = torch.tensor(_IMAGENET_MEAN, dtype=torch.float32, device=device).view(
            1, 1, 3, 1, 1
        )
        self._resnet_std = torch.tensor(_IMAGENET_STD, dtype=torch.float32, device=device).view(1, 1, 3, 1, 1)

    @property
    def compute_dtype(self) -> torch.dtype:
        """dtype of the matmul weights (bfloat16/float16 after a low-precision load, else float32)."""
        return self.patch_embed.patch_embed.proj.weight.dtype

    def low_precision_context(self, device: torch.device) -> contextlib.AbstractContextManager[None]:
        """Autocast to the weights' dtype after a bf16/fp16 load, else nothing (the caller's autocast holds)."""
        low = self.compute_dtype
        if low in _LOW_PRECISION:
            return torch.autocast(device.type, dtype=low)
        return contextlib.nullcontext()

    def embed(self, images: Tensor, first_frame: bool = True) -> Tensor:
        """Normalised ``[B, S, 3, H, W]`` images → tokens ``[B*S, P, C]`` (camera, registers, patches).

        Args:
            images: Validated images in [0, 1]; ImageNet normalisation happens here, once.
            first_frame: Whether frame 0 of ``images`` is the first frame of its sequence (slot 0 of
                the camera/register tokens); False for frames streamed after the first.
        """
        b, s, _, height, width = images.shape
        x = (images - self._resnet_mean) / self._resnet_std
        patch_tokens = self.patch_embed(x.reshape(b * s, 3, height, width))
        return torch.cat(
            (
                _special_tokens(self.camera_token, b, s, first_frame),
                _special_tokens(self.register_token, b, s, first_frame),
                patch_tokens,
            ),
            dim=1,
        )

    def stream(self, layers: Iterable[int] = (22,), window: KVWindow | None = None) -> AggregatorStream:
        """A streaming session: feed frames one at a time, each global block keeping a K/V cache.

        Args:
            layers: Layer indices each step returns (22 for JanusVLN features).
            window: Keep only the first ``window.start`` and the most recent ``window.recent`` frames
                in the cache (``JANUSVLN_WINDOW`` = 8 + 48); ``None`` keeps every frame.

        Returns:
            An :class:`~vggtctl.models.vggt.streaming.AggregatorStream`; ``step(frame)`` gives the
            same tokens as ``forward(frames, causal=True)`` gives for that frame.
        """
        from .streaming import AggregatorStream

        return AggregatorStream(self, normalize_layers(layers, self.depth), window)

    def forward(
        self, images: Tensor, layers: Iterable[int] = DPT_LAYERS, causal: bool = False
    ) -> tuple[list[Tensor | None], int]:
        """Run the aggregator and return the requested layer outputs.

        Args:
            images: ``[B, S, 3, H, W]`` (or ``[S, 3, H, W]``) in [0, 1], H and W multiples of the patch size.
            layers: Layer indices to return (e.g. 4, 11, 17, 23 for DPT heads, 22 for VLN).
            causal: Frame-causal global attention (frame i sees frames 0..i), as JanusVLN runs VGGT.

        Returns:
            ``(outputs, patch_start_idx)``: a list of ``depth`` entries, ``[B, S, P, 2C]`` at the
            requested indices and ``None`` elsewhere.

        Raises:
            InputError: Bad images (see :func:`validate_images`).
            UsageError: A layer index out of range.
        """
        images = validate_images(images, self.patch_size)
        return self.run(images, normalize_layers(layers, self.depth), causal=causal), self.patch_start_idx

    def run(self, images: Tensor, layers: tuple[int, ...], causal: bool = False) -> list[Tensor | None]:
        """The forward pass on validated ``[B, S, 3, H, W]`` images and normalised layer indices."""
        b, s, _, height, width = images.shape
        h, w = height // self.patch_size, width // self.patch_size
        with self.low_precision_context(images.device):
            tokens = self.embed(images)
            p, c = tokens.shape[1], tokens.shape[2]
            rope = FrameRope(self.rope, self.head_dim, h, w, self.patch_start_idx, images.device)
            # One frame has nothing to hide from itself: the unmasked pass is the same computation.
            mask = frame_causal_mask(s, p, images.device) if causal and s > 1 else None
            ckpt = self.training and self.gradient_checkpointing
            outputs: list[Tensor | None] = [None] * self.depth
            wanted = set(layers)
            for i in range(max(layers) + 1):
                tokens = run_block(self.frame_blocks[i], tokens.reshape(b * s, p, c), rope, ckpt)
                frame_out = tokens if i in wanted else None
                tokens = run_block(self.global_blocks[i], tokens.reshape(b, s * p, c), rope, ckpt, mask)
                if frame_out is not None:
                    outputs[i] = torch.cat(
                        (frame_out.reshape(b, s, p, c), tokens.reshape(b, s, p, c)), dim=-1
                    )
                    del frame_out
        return outputs
