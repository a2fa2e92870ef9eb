"""Transformer building blocks shared by the DINOv2 patch embed, the aggregator and the camera trunk.

Key names follow the reference (``norm1``, ``attn.qkv``, ``attn.q_norm``, ``attn.k_norm``,
``attn.proj``, ``ls1.gamma``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``, ``ls2.gamma``) so the
``facebook/VGGT-1B`` checkpoint loads key for key.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .rope import FrameRope, apply_rope

_ONEDNN_LINEAR = True


def set_onednn_linear(enabled: bool) -> bool:
    """Switch the oneDNN fp32 inference path of plain ``nn.Linear`` layers; returns the old setting.

    On x86 CPUs without Intel-specific BLAS paths (e.g. AMD EPYC) oneDNN's GEMM is faster than the
    default MKL ``addmm`` and fuses the MLP's GELU. The numbers agree to float32 rounding.
    """
    global _ONEDNN_LINEAR
    old, _ONEDNN_LINEAR = _ONEDNN_LINEAR, bool(enabled)
    return old


def _plain(layer: nn.Module, cls: type[nn.Module]) -> bool:
    # Only the exact class without hooks: LoRA/quantized replacements must run their own forward.
    return type(layer) is cls and not layer._forward_hooks and not layer._forward_pre_hooks


# Below this many multiply-adds oneDNN's per-call overhead outweighs its faster kernel (tiny model).
_ONEDNN_MIN_MACS = 1 << 24


def _onednn_ok(x: Tensor, weight: Tensor) -> bool:
    if not (_ONEDNN_LINEAR and _HAS_ONEDNN):
        return False
    # Quantized weights (torchao's int8 tensor subclasses) dispatch their own kernels.
    if type(weight) not in (Tensor, nn.Parameter):
        return False
    if x.numel() * weight.shape[0] < _ONEDNN_MIN_MACS:
        return False
    if x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return False
    if torch.is_autocast_enabled("cpu"):
        return False
    # The fused op has no autograd formula.
    return not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))


def _probe_onednn() -> bool:
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        x = torch.ones(2, 3)
        w = torch.ones(4, 3)
        out = torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "none")
        return bool(torch.allclose(out, x @ w.t()))
    except (AttributeError, RuntimeError):
        return False


_HAS_ONEDNN = _probe_onednn()


def dense(x: Tensor, weight: Tensor, bias: Tensor | None, gelu: bool = False) -> Tensor:
    """``x @ weight.T + bias`` over the last dim (then exact GELU), via oneDNN for fp32 CPU inference.

    The GELU is applied in place after the GEMM rather than as oneDNN's fused ``gelu`` post-op:
    on AVX2 the post-op makes the MLP's first GEMM ~15 % slower than GEMM + a separate pass.
    """
    if _onednn_ok(x, weight):
        flat = x.reshape(-1, x.shape[-1])
        out = torch.ops.mkldnn._linear_pointwise(flat, weight, bias, "none", [], "none")
        if gelu:
            torch._C._nn.gelu_(out)
        return out.view(*x.shape[:-1], out.shape[-1])
    out = F.linear(x, weight, bias)
    return F.gelu(out) if gelu else out


def linear(x: Tensor, layer: nn.Module, gelu: bool = False) -> Tensor:
    """``layer(x)`` (then exact GELU when ``gelu``); plain ``nn.Linear`` layers go through :func:`dense`."""
    if _plain(layer, nn.Linear):
        return dense(x, layer.weight, layer.bias, gelu)
    out = layer(x)
    return F.gelu(out) if gelu else out


def conv1x1_tokens(x: Tensor, conv: nn.Module, h: int, w: int) -> Tensor:
    """A 1×1 conv applied to tokens ``[N, h*w, C]`` → ``[N, C_out, h, w]`` in channels-last memory.

    A 1×1 conv is a GEMM over channels; doing it on the token layout skips the NCHW copy the
    convolution path needs. Replaced (non-``nn.Conv2d``) modules run their own forward.
    """
    n, _, c = x.shape
    if _plain(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1:
        out = dense(x, conv.weight.view(conv.out_channels, c), conv.bias)
        return out.view(n, h, w, -1).permute(0, 3, 1, 2)
    grid = x.permute(0, 2, 1).reshape(n, c, h, w)
    return conv(grid)


class LayerScale(nn.Module):
    """Per-channel residual scale ``x * gamma`` (key ``gamma``)."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """fc1 → exact GELU → fc2."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x: Tensor) -> Tensor:
        return linear(linear(x, self.fc1, gelu=True), self.fc2)


class KVStore(Protocol):
    """Where a streaming attention layer keeps the K/V of earlier frames (see ``streaming.LayerKV``)."""

    def extend(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store the new frame's ``k``, ``v`` ``[B, heads, P, head_dim]``; return all cached K/V + them."""
        ...


class Attention(nn.Module):
    """Multi-head self-attention with optional per-head qk-LayerNorm and 2-D RoPE, always via SDPA.

    ``attn_mask`` (boolean, True = may attend) restricts which keys each query sees (the aggregator's
    frame-causal pass); ``kv_cache`` makes the queries of the new tokens attend over the cached K/V of
    earlier frames as well as their own (streaming). Both default to plain bidirectional attention.

    Args:
        dim: Token width.
        num_heads: Heads (head_dim = dim / num_heads).
        qk_norm: LayerNorm (affine, eps 1e-5) over head_dim on q and k, before RoPE.
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else None
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else None
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(
        self,
        x: Tensor,
        rope: FrameRope | None = None,
        attn_mask: Tensor | None = None,
        kv_cache: KVStore | None = None,
    ) -> Tensor:
        b, n, c = x.shape
        qkv = linear(x, self.qkv).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        if kv_cache is not None:
            k, v = kv_cache.extend(k, v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return linear(out.transpose(1, 2).reshape(b, n, c), self.proj)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))``, then ``x + ls2(mlp(norm2(x)))``.

    Args:
        dim: Token width.
        num_heads: Attention heads.
        mlp_ratio: MLP hidden width / dim.
        qk_norm: qk-LayerNorm in attention (aggregator blocks only).
        norm_eps: LayerNorm eps (1e-5 aggregator/camera trunk, 1e-6 DINOv2).
        init_values: LayerScale initial value.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qk_norm: bool = False,
        norm_eps: float = 1e-5,
        init_values: float = 0.01,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm)
        self.ls1 = LayerScale(dim, init_values)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values)

    def forward(
        self,
        x: Tensor,
        rope: FrameRope | None = None,
        attn_mask: Tensor | None = None,
        kv_cache: KVStore | None = None,
    ) -> Tensor:
        if attn_mask is None and kv_cache is None:
            attn = self.attn(self.norm1(x), rope)
        else:
            attn = self.attn(self.norm1(x), rope, attn_mask=attn_mask, kv_cache=kv_cache)
        x = _scaled_residual(x, attn, self.ls1)
        return _scaled_residual(x, self.mlp(self.norm2(x)), self.ls2)


def _scaled_residual(x: Tensor, branch: Tensor, ls: nn.Module) -> Tensor:
    """``x + ls(branch)``; a plain LayerScale becomes one fused ``addcmul`` pass over the tokens."""
    if _plain(ls, LayerScale):
        return torch.addcmul(x, branch, ls.gamma)  # type: ignore[arg-type]
    return x + ls(branch)


def run_block(
    block: nn.Module,
    x: Tensor,
    rope: FrameRope | None,
    checkpoint: bool,
    attn_mask: Tensor | None = None,
) -> Tensor:
    """``block(x, rope)``, recomputed in backward when ``checkpoint`` (saves activation memory)."""
    if checkpoint and torch.is_grad_enabled():
        from torch.utils.checkpoint import checkpoint as ckpt

        if attn_mask is None:
            return ckpt(block, x, rope, use_reentrant=False)
        return ckpt(block, x, rope, attn_mask, use_reentrant=False)
    if attn_mask is None:
        return block(x, rope)
    return block(x, rope, attn_mask=attn_mask)
