"""Streaming VGGT: frames go through the aggregator one at a time, global blocks keep a K/V cache.

This is how JanusVLN runs its frozen VGGT (StreamVGGT-style): each global block appends the new
frame's keys and values (all tokens: camera, registers, patches) to a per-layer cache and its queries
attend over the cached frames plus itself. No mask is needed, so attention is frame-causal, and a
stream reproduces ``aggregator(frames, causal=True)`` frame by frame. RoPE positions repeat per
frame (there is no temporal position); the first frame of a stream uses the "first-frame" camera and
register tokens, every later frame the "other" ones. Frame blocks need no cache.

Training resets the stream per sample; evaluation keeps it across the steps of an episode and trims
it to a window (:data:`JANUSVLN_WINDOW`: the first 8 frames + the most recent 48). Only global blocks
up to the deepest requested layer run, so only those hold a cache.

Streaming is inference only: steps run under ``torch.no_grad`` (VGGT is frozen in JanusVLN).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from vggtctl.errors import InputError, UsageError

from .inputs import validate_images
from .rope import FrameRope

if TYPE_CHECKING:  # pragma: no cover
    from .aggregator import Aggregator
    from .config import VGGTConfig


@dataclass(frozen=True)
class KVWindow:
    """Which cached frames survive a trim: the first ``start`` and the most recent ``recent``.

    Attributes:
        start: Frames kept from the beginning of the stream (JanusVLN's initial window).
        recent: Most recent frames kept (JanusVLN's sliding window).
    """

    start: int = 8
    recent: int = 48

    def __post_init__(self) -> None:
        if self.start < 0 or self.recent < 1:
            raise UsageError(
                f"KV window start={self.start}, recent={self.recent}: start must be >= 0 and recent >= 1",
                "JanusVLN evaluates with KVWindow(start=8, recent=48)",
            )

    @property
    def size(self) -> int:
        """The most frames a trimmed cache holds."""
        return self.start + self.recent

    def keep(self, count: int) -> list[int]:
        """Positions (0-based, in cache order) kept out of ``count`` cached frames."""
        if count <= self.size:
            return list(range(count))
        return list(range(self.start)) + list(range(count - self.recent, count))


#: JanusVLN's evaluation window: the first 8 frames + the most recent 48.
JANUSVLN_WINDOW = KVWindow(start=8, recent=48)


class LayerKV:
    """The K/V of one global block: one ``[B, heads, P, head_dim]`` pair per cached frame."""

    def __init__(self) -> None:
        self.keys: list[Tensor] = []
        self.values: list[Tensor] = []

    def extend(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store the new frame's K/V and return every cached frame's, new frame last, along tokens."""
        self.keys.append(k)
        self.values.append(v)
        if len(self.keys) == 1:
            return k, v
        return torch.cat(self.keys, dim=2), torch.cat(self.values, dim=2)

    def trim(self, keep: list[int]) -> None:
        """Keep only the frames at positions ``keep``."""
        self.keys = [self.keys[i] for i in keep]
        self.values = [self.values[i] for i in keep]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))


def kv_bytes_per_frame(
    config: VGGTConfig, tokens_per_frame: int, dtype: torch.dtype, layers: int | None = None, batch: int = 1
) -> int:
    """Bytes the K/V cache holds per frame: 2 × layers × batch × tokens × embed_dim × element size.

    Args:
        config: The model config (embed_dim = heads × head_dim, depth).
        tokens_per_frame: Special tokens + patches (1,615 for 490×644 on VGGT-1B).
        dtype: Storage dtype of K/V (the compute dtype: bf16 under autocast).
        layers: Global blocks that cache (default all ``config.depth``; a stream to layer L caches L+1).
        batch: Sequences streamed side by side.
    """
    n_layers = config.depth if layers is None else layers
    elem = torch.empty((), dtype=dtype).element_size()
    return 2 * n_layers * batch * tokens_per_frame * config.embed_dim * elem


class AggregatorStream:
    """One streaming session over an :class:`~vggtctl.models.vggt.aggregator.Aggregator`.

    Use ``Aggregator.stream(layers, window)`` to make one. ``step(frame)`` returns the requested
    layers for that frame (``[B, 1, P, 2C]``, ``None`` elsewhere), the tokens the causal full pass
    gives for it; ``reset()`` starts a new sequence.
    """

    def __init__(self, aggregator: Aggregator, layers: tuple[int, ...], window: KVWindow | None) -> None:
        self.aggregator = aggregator
        self.layers = layers
        self.window = window
        self.reset()

    def reset(self) -> None:
        """Forget every cached frame: the next step is the first frame of a new sequence."""
        self.frames_seen = 0
        self._cached: list[int] = []
        self._kv = [LayerKV() for _ in range(max(self.layers) + 1)]
        self._grid: tuple[int, int, int] | None = None

    @property
    def cached_frames(self) -> tuple[int, ...]:
        """Stream indices (0 = first frame since the last reset) of the frames in the cache, in order."""
        return tuple(self._cached)

    @property
    def cache_bytes(self) -> int:
        """Bytes held by the K/V cache now (all layers, keys and values)."""
        return sum(layer.nbytes for layer in self._kv)

    @property
    def bytes_per_frame(self) -> int:
        """Bytes one cached frame costs (0 before the first step)."""
        return self.cache_bytes // len(self._cached) if self._cached else 0

    def kv(self, layer: int) -> tuple[Tensor, Tensor]:
        """Cached K and V of global block ``layer`` as ``[B, heads, frames, P, head_dim]``."""
        store = self._kv[layer]
        if not store.keys:
            raise UsageError("the stream holds no frame yet", "call step(frame) first")
        return torch.stack(store.keys, dim=2), torch.stack(store.values, dim=2)

    def _check(self, frame: Tensor) -> Tensor:
        images = frame.unsqueeze(-4) if frame.ndim in (3, 4) else frame
        if images.ndim == 4:
            images = images.unsqueeze(0)
        images = validate_images(images, self.aggregator.patch_size)
        if images.shape[1] != 1:
            raise InputError(
                f"step() takes one frame, got {images.shape[1]} (shape {tuple(frame.shape)})",
                "pass [3,H,W] or [B,3,H,W]; use extend(frames) for several frames",
            )
        grid = (images.shape[0], images.shape[-2], images.shape[-1])
        if self._grid is not None and grid != self._grid:
            raise InputError(
                f"frame batch×H×W {grid} differs from the stream's {self._grid}",
                "every frame of a stream must have the same size; reset() between sequences",
            )
        self._grid = grid
        return images

    def step(self, frame: Tensor) -> list[Tensor | None]:
        """Run one frame ``[3, H, W]`` or ``[B, 3, H, W]`` (in [0, 1]) through the aggregator.

        Returns:
            ``depth`` entries: ``[B, 1, P, 2C]`` (frame ‖ global) at the stream's layers, else ``None``.

        Raises:
            InputError: A bad frame, or one whose size differs from the earlier frames'.
        """
        images = self._check(frame)
        agg = self.aggregator
        b, _, _, height, width = images.shape
        rope = FrameRope(
            agg.rope,
            agg.head_dim,
            height // agg.patch_size,
            width // agg.patch_size,
            agg.patch_start_idx,
            images.device,
        )
        outputs: list[Tensor | None] = [None] * agg.depth
        wanted = set(self.layers)
        with torch.no_grad(), agg.low_precision_context(images.device):
            tokens = agg.embed(images, first_frame=self.frames_seen == 0)
            p, c = tokens.shape[1], tokens.shape[2]
            for i in range(max(self.layers) + 1):
                tokens = agg.frame_blocks[i](tokens, rope)
                frame_out = tokens if i in wanted else None
                tokens = agg.global_blocks[i](tokens, rope, kv_cache=self._kv[i])
                if frame_out is not None:
                    outputs[i] = torch.cat(
                        (frame_out.reshape(b, 1, p, c), tokens.reshape(b, 1, p, c)), dim=-1
                    )
        self._cached.append(self.frames_seen)
        self.frames_seen += 1
        self._trim()
        return outputs

    def extend(self, frames: Tensor) -> list[list[Tensor | None]]:
        """``step`` each frame of ``[S, 3, H, W]`` or ``[B, S, 3, H, W]`` in order; one output list per frame."""
        if frames.ndim == 4:
            frames = frames.unsqueeze(0)
        if frames.ndim != 5:
            raise InputError(
                f"extend() takes [S,3,H,W] or [B,S,3,H,W], got shape {tuple(frames.shape)}",
                "use step(frame) for a single frame",
            )
        return [self.step(frames[:, t]) for t in range(frames.shape[1])]

    def _trim(self) -> None:
        if self.window is None:
            return
        keep = self.window.keep(len(self._cached))
        if len(keep) == len(self._cached):
            return
        self._cached = [self._cached[i] for i in keep]
        for layer in self._kv:
            layer.trim(keep)
