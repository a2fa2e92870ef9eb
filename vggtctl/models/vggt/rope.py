"""2-D rotary position embedding of the aggregator (``RotaryPositionEmbedding2D(frequency=100)``).

Positions per frame: the special tokens sit at (0, 0); the patch at grid (row y, col x) sits at
(y + 1, x + 1). head_dim is split in halves: the first half is rotated by y, the second by x.
Within a half of size d, ``inv_freq = 1 / freq^(arange(0, d, 2) / d)``, cos/sin tables are
``cat(angle, angle)`` and rotation is ``x*cos + rotate_half(x)*sin`` with
``rotate_half([a, b]) = [-b, a]`` (half-split layout, not interleaved pairs).

Instead of gathering the tables per block (as the reference does with ``F.embedding``), the full
per-token ``[P, head_dim]`` cos/sin tables are built once per forward and broadcast over heads and
frames; the arithmetic per element is the same.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class RopeTables(NamedTuple):
    """cos/sin tables ``[P, head_dim]`` for the P tokens of one frame."""

    cos: Tensor
    sin: Tensor


class FrameRope:
    """The RoPE of one frame layout (h×w grid + special tokens), handing out tables per dtype.

    The reference casts the angles to the token dtype before cos/sin, so a bf16 run uses different
    tables from a float32 run; they are built on first use and cached by :class:`Rope2D`.
    """

    def __init__(
        self, builder: Rope2D, head_dim: int, h: int, w: int, num_special: int, device: torch.device
    ) -> None:
        self.builder, self.head_dim, self.h, self.w = builder, head_dim, h, w
        self.num_special, self.device = num_special, device

    def get(self, dtype: torch.dtype) -> RopeTables:
        """Tables (cos, signed sin) in ``dtype``."""
        return self.builder.tables(self.head_dim, self.h, self.w, self.num_special, dtype, self.device)


def frequency_tables(
    dim: int, positions: int, base: float, dtype: torch.dtype, device: torch.device
) -> RopeTables:
    """cos/sin ``[positions, dim]`` for one axis (angles cast to ``dtype`` before cos/sin, as the reference)."""
    exponents = torch.arange(0, dim, 2, device=device).float() / dim
    inv_freq = 1.0 / (base**exponents)
    pos = torch.arange(positions, device=device, dtype=inv_freq.dtype)
    angles = torch.outer(pos, inv_freq).to(dtype)
    angles = torch.cat((angles, angles), dim=-1)
    return RopeTables(angles.cos().to(dtype), angles.sin().to(dtype))


def grid_positions(h: int, w: int, num_special: int, device: torch.device | None = None) -> Tensor:
    """``[num_special + h*w, 2]`` integer (y, x): zeros for special tokens, then the grid + 1 row-major."""
    ys = torch.arange(h, device=device).repeat_interleave(w)
    xs = torch.arange(w, device=device).repeat(h)
    grid = torch.stack((ys, xs), dim=-1) + 1
    return torch.cat((torch.zeros(num_special, 2, dtype=grid.dtype, device=device), grid), dim=0)


class Rope2D:
    """Builds (and caches per grid/dtype/device) the per-frame RoPE tables. Holds no parameters."""

    def __init__(self, frequency: float = 100.0) -> None:
        self.frequency = float(frequency)
        self._cache: dict[tuple[int, int, int, int, torch.dtype, str], RopeTables] = {}

    def tables(
        self, head_dim: int, h: int, w: int, num_special: int, dtype: torch.dtype, device: torch.device
    ) -> RopeTables:
        """cos/sin ``[num_special + h*w, head_dim]`` for a frame with an h×w patch grid."""
        key = (head_dim, h, w, num_special, dtype, str(device))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        half = head_dim // 2
        pos = grid_positions(h, w, num_special, device)
        axis = frequency_tables(half, int(pos.max()) + 1, self.frequency, dtype, device)
        cos = torch.cat((axis.cos[pos[:, 0]], axis.cos[pos[:, 1]]), dim=-1).contiguous()
        sin = torch.cat((axis.sin[pos[:, 0]], axis.sin[pos[:, 1]]), dim=-1)
        # Fold rotate_half's sign into sin: rotate_half([a, b]) * s == [b, a] * [-s_a, s_b].
        q = head_dim // 4
        sign = torch.ones(head_dim, dtype=dtype, device=device)
        sign[0:q] = -1
        sign[2 * q : 3 * q] = -1
        tables = RopeTables(cos, (sin * sign).contiguous())
        if len(self._cache) > 16:
            self._cache.clear()
        self._cache[key] = tables
        return tables


def apply_rope(x: Tensor, rope: FrameRope) -> Tensor:
    """Rotate ``x [B, heads, N, head_dim]`` where N is a multiple of the table length P (frames × P)."""
    cos, signed_sin = rope.get(x.dtype)
    p, d = cos.shape
    n = x.shape[-2]
    q = d // 4
    # [a, b | c, d] -> [b, a | d, c] (sign lives in signed_sin).
    swapped = x.unflatten(-1, (2, 2, q)).flip(-2).flatten(-3)
    if n == p:
        return x * cos + swapped * signed_sin
    frames = n // p
    xs = x.unflatten(-2, (frames, p))
    out = xs * cos + swapped.unflatten(-2, (frames, p)) * signed_sin
    return out.flatten(-3, -2)
