"""vggtctl's own int8 modules, for what torchao's ``quantize_`` has no serialisable form of.

- :class:`Int8Conv`: int8 weight-only ``Conv2d``/``ConvTranspose2d`` (per-output-channel symmetric
  scales, dequantised per call). torchao quantizes Linear layers only; the DPT and track-head
  convolutions are 7 % of VGGT-1B and must be int8 for the artifact to reach 1/4 of the float file.
- :class:`StaticInt8Linear`: int8 weights and a calibrated per-tensor activation scale.
  torchao 0.18's ``Int8StaticActivationInt8WeightConfig`` runs, but its tensors cannot be flattened
  to safetensors and it asserts on per-row weights, so static layers are this module. On CPU it
  computes in int8: inputs are rounded to the calibrated int8 grid, ``torch._int_mm`` multiplies
  them with the int8 weights into exact int32 sums, and one float multiply by ``act_scale *
  weight_scale`` dequantizes. Elsewhere (CUDA, not measured here) it runs the same arithmetic
  simulated (float GEMM on the rounded values), equal up to float summation order.

Both keep plain tensors (``qweight`` int8, ``weight_scale`` float32, ``bias``) so their state dicts
go to safetensors as is, and both can be built on the meta device from the float module's shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .hadamard import HadamardLinear, fwht, hadamard_block

QMAX = 127


def per_channel_int8(weight: Tensor, per_tensor: bool = False) -> tuple[Tensor, Tensor]:
    """Symmetric int8 of ``weight`` with one scale per output channel (dim 0), or one for all.

    Returns:
        ``(qweight int8, scale float32)``, ``scale`` shaped to broadcast against ``weight``.
    """
    w = weight.detach().to(torch.float32)
    dims = tuple(range(w.ndim)) if per_tensor else tuple(range(1, w.ndim))
    amax = w.abs().amax(dim=dims, keepdim=True) if dims else w.abs()
    scale = (amax / QMAX).clamp_min(torch.finfo(torch.float32).tiny)
    q = torch.clamp(torch.round(w / scale), -QMAX, QMAX).to(torch.int8)
    if per_tensor:
        scale = scale.reshape([1] * w.ndim)
    return q, scale


class Int8Conv(nn.Module):
    """Weight-only int8 convolution (``Conv2d`` or ``ConvTranspose2d`` geometry).

    For ``ConvTranspose2d`` the output channels are weight dim 1; the scale is then per input
    channel of the stored weight (dim 0), which is still one scale per weight slice and exact in form.
    """

    def __init__(self, conv: nn.Conv2d | nn.ConvTranspose2d) -> None:
        super().__init__()
        self.transposed = isinstance(conv, nn.ConvTranspose2d)
        self.stride = conv.stride
        self.padding = conv.padding
        self.dilation = conv.dilation
        self.groups = conv.groups
        self.output_padding = getattr(conv, "output_padding", (0, 0))
        self.in_channels = conv.in_channels
        self.out_channels = conv.out_channels
        self.kernel_size = conv.kernel_size
        shape = tuple(conv.weight.shape)
        device = conv.weight.device
        self.register_buffer("qweight", torch.empty(shape, dtype=torch.int8, device=device))
        self.register_buffer(
            "weight_scale", torch.empty((shape[0],) + (1,) * (len(shape) - 1), device=device)
        )
        self.bias = (
            nn.Parameter(torch.empty(conv.out_channels, device=device), requires_grad=False)
            if conv.bias is not None
            else None
        )
        if device.type != "meta":
            q, s = per_channel_int8(conv.weight)
            self.qweight.copy_(q)
            self.weight_scale.copy_(s)
            if conv.bias is not None and self.bias is not None:
                self.bias.data.copy_(conv.bias.detach())

    def forward(self, x: Tensor) -> Tensor:
        w = self.qweight.to(x.dtype) * self.weight_scale.to(x.dtype)
        if self.transposed:
            return F.conv_transpose2d(
                x, w, self.bias, self.stride, self.padding, self.output_padding, self.groups, self.dilation
            )
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class StaticInt8Linear(nn.Module):
    """Int8 weights + a calibrated per-tensor activation scale (optionally Hadamard-rotated input).

    Args:
        linear: The float layer (its shapes; its values too unless it is on the meta device).
        act_scale: The calibrated activation scale (``amax / 127`` of the range the observer chose).
        per_tensor_weight: One weight scale for the whole matrix (the ``minmax``/``histogram``
            observers) instead of one per output channel (``per_channel``).
        rotate: Fold a Hadamard rotation in (the weight given is the unrotated one).
    """

    def __init__(
        self,
        linear: nn.Linear,
        act_scale: float = 1.0,
        per_tensor_weight: bool = False,
        rotate: bool = False,
    ) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.block = hadamard_block(linear.in_features) if rotate else 1
        device = linear.weight.device
        w_shape = (linear.out_features, 1) if not per_tensor_weight else (1, 1)
        self.register_buffer(
            "qweight", torch.empty(linear.out_features, linear.in_features, dtype=torch.int8, device=device)
        )
        self.register_buffer("weight_scale", torch.empty(w_shape, device=device))
        self.register_buffer("act_scale", torch.full((1,), float(act_scale), device=device))
        self.bias = (
            nn.Parameter(torch.empty(linear.out_features, device=device), requires_grad=False)
            if linear.bias is not None
            else None
        )
        if device.type != "meta":
            weight = linear.weight.detach().to(torch.float32)
            if rotate and not isinstance(linear, HadamardLinear):  # a HadamardLinear holds W H already
                weight = fwht(weight, self.block)
            q, s = per_channel_int8(weight, per_tensor=per_tensor_weight)
            self.qweight.copy_(q)
            self.weight_scale.copy_(s)
            if linear.bias is not None and self.bias is not None:
                self.bias.data.copy_(linear.bias.detach())

    def forward(self, x: Tensor) -> Tensor:
        x = fwht(x, self.block)
        if x.device.type == "cpu" and self.int_kernel:
            return self.forward_int8(x)
        return self.forward_simulated(x)

    # Real int8 GEMM on CPU (oneDNN: AMX / VNNI where the CPU has them). Off only to measure against
    # the simulated path (tests, the benchmark); a class attribute, so it is no state-dict entry.
    int_kernel = True

    def forward_int8(self, x: Tensor) -> Tensor:
        """``round(x / s_a)`` to int8, ``torch._int_mm`` (int8 x int8 -> exact int32), then ``* s_a * s_w``."""
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)
        xq = torch.clamp(torch.round(x2 / self.act_scale.to(x.dtype)), -QMAX - 1, QMAX).to(torch.int8)
        acc = torch._int_mm(xq, self.qweight.t())
        out_scale = self.act_scale * self.weight_scale.reshape(1, -1)  # float32, [1, out] or [1, 1]
        y = acc.to(torch.float32) * out_scale
        if self.bias is not None:
            y = y + self.bias.to(torch.float32)
        return y.to(x.dtype).reshape(*shape[:-1], self.out_features)

    def forward_simulated(self, x: Tensor) -> Tensor:
        """The same arithmetic with a float GEMM (inputs rounded to the calibrated grid, int8 weights)."""
        scale = self.act_scale.to(x.dtype)
        xq = torch.clamp(torch.round(x / scale), -QMAX - 1, QMAX) * scale
        w = self.qweight.to(x.dtype) * self.weight_scale.to(x.dtype)
        return F.linear(xq, w, self.bias)
