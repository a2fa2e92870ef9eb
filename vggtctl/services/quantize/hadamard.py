"""Orthonormal Hadamard rotations (QuaRot's trick) folded into Linear layers.

For a Linear ``y = W x + b`` and an orthonormal, symmetric Hadamard matrix ``H`` (``H H = I``),
``y = (W H)(H x) + b``: the layer keeps its float outputs while both its weight and its input are
spread over all channels, so one outlier channel no longer sets the int8 range of a whole token
(activations) or row (weights). ``H`` is block-diagonal with blocks of the largest power of two
that divides ``in_features`` (1024 and 4096 for VGGT-1B), applied with a fast Walsh-Hadamard
transform (``O(n log n)`` per token, no matrix stored).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def hadamard_block(n: int) -> int:
    """The largest power of two dividing ``n`` (the rotation's block size; 1 means no rotation)."""
    return n & -n


def fwht(x: Tensor, block: int) -> Tensor:
    """``x @ H`` over the last dim with ``H`` block-diagonal orthonormal Hadamard blocks of ``block``.

    Args:
        x: ``[..., n]`` with ``n`` a multiple of ``block``.
        block: A power of two.
    """
    n = x.shape[-1]
    if block <= 1:
        return x
    if block & (block - 1) or n % block:
        raise ValueError(f"block {block} must be a power of two dividing the width {n}")
    lead = x.shape[:-1]
    y = x.reshape(-1, n // block, block)
    h = 1
    while h < block:
        y = y.view(y.shape[0], n // block, block // (2 * h), 2, h)
        a, b = y[:, :, :, 0], y[:, :, :, 1]
        y = torch.stack((a + b, a - b), dim=3)
        h *= 2
    return (y.reshape(*lead, n) * block**-0.5).to(x.dtype)


class HadamardLinear(nn.Linear):
    """``Linear(H x)`` with the weight stored already rotated (``W H``); same keys as ``nn.Linear``.

    A subclass so torchao's ``quantize_`` treats it as a Linear (it swaps ``weight`` for an int8
    tensor), while the model's fast path for plain ``nn.Linear`` leaves it to this forward.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, **kwargs: object) -> None:
        super().__init__(in_features, out_features, bias=bias, **kwargs)  # type: ignore[arg-type]
        self.block = hadamard_block(in_features)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(fwht(x, self.block), self.weight, self.bias)


def rotated(linear: nn.Linear) -> HadamardLinear:
    """A :class:`HadamardLinear` computing the same function as ``linear`` (float, up to rounding)."""
    device = linear.weight.device
    out = HadamardLinear(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
    if device.type == "meta":
        return out
    with torch.no_grad():
        weight = fwht(linear.weight.detach().to(torch.float32), out.block).to(linear.weight.dtype)
    out.weight = nn.Parameter(weight, requires_grad=False)
    if linear.bias is not None:
        out.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
    return out
