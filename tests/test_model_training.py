"""Training support: gradients under per-block checkpointing, and mixed precision (bf16 autocast/weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vggtctl.models.vggt.build import from_state_dict
from vggtctl.models.vggt.config import get_config
from vggtctl.models.vggt.model import VGGT


@pytest.fixture(scope="module")
def state_dict(tiny_checkpoint: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(tiny_checkpoint))


@pytest.fixture(scope="module")
def frames(tiny_reference: dict[str, np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(tiny_reference["input_images"][:2, :, :, :140].copy())  # [2, 3, 140, 140]


def fresh(state_dict: dict[str, torch.Tensor], **overrides: object) -> VGGT:
    # Clone: training mutates nothing here, but the module-scoped tensors must stay pristine.
    return from_state_dict(get_config("tiny", **overrides), {k: v.clone() for k, v in state_dict.items()})


def total_loss(out: dict) -> torch.Tensor:
    loss = sum(p.mean() for p in out["pose_enc_list"])
    for key in ("depth", "depth_conf", "world_points", "world_points_conf", "track", "vis", "conf"):
        if key in out:
            loss = loss + out[key].float().mean()
    return loss


def test_gradients_reach_every_trainable_parameter_under_checkpointing(
    state_dict: dict[str, torch.Tensor], frames: torch.Tensor
) -> None:
    model = fresh(state_dict).train()
    assert model.config.gradient_checkpointing
    calls = []
    hook = model.aggregator.frame_blocks[0].register_forward_pre_hook(lambda *a: calls.append(1))
    queries = torch.tensor([[30.0, 40.0], [100.0, 70.0]])
    out = model(frames, query_points=queries)
    assert "images" not in out  # training mode returns predictions only
    assert len(calls) == 1
    total_loss(out).backward()
    hook.remove()
    assert (
        len(calls) == 2
    )  # recomputed in backward (a pre-hook: early-stopped recomputation skips post-hooks)
    unused = {"aggregator.patch_embed.mask_token"}  # DINOv2 masked pre-training only
    no_grad = [
        n for n, p in model.named_parameters() if n not in unused and (p.grad is None or not p.grad.any())
    ]
    assert no_grad == []
    assert all(torch.isfinite(p.grad).all() for n, p in model.named_parameters() if n not in unused)


def test_checkpointing_changes_memory_not_gradients(
    state_dict: dict[str, torch.Tensor], frames: torch.Tensor
) -> None:
    grads = []
    for ckpt in (True, False):
        model = fresh(state_dict, enable_track=False, gradient_checkpointing=ckpt).train()
        calls = []
        hook = model.aggregator.global_blocks[5].register_forward_pre_hook(lambda *a, c=calls: c.append(1))
        total_loss(model(frames)).backward()
        hook.remove()
        assert len(calls) == (2 if ckpt else 1)
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    for name in (
        "aggregator.frame_blocks.3.attn.qkv.weight",
        "aggregator.patch_embed.pos_embed",
        "depth_head.norm.weight",
    ):
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6)
    # In eval mode nothing is recomputed even with grad enabled.
    model = fresh(state_dict, enable_track=False).eval()
    calls = []
    model.aggregator.global_blocks[5].register_forward_pre_hook(lambda *a: calls.append(1))
    total_loss(model(frames)).backward()
    assert len(calls) == 1


def test_bf16_autocast_keeps_heads_and_residual_stream_in_float32(
    state_dict: dict[str, torch.Tensor], frames: torch.Tensor
) -> None:
    model = fresh(state_dict, enable_track=False)
    with torch.inference_mode():
        ref = model(frames)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(frames)
            layers, _ = model.aggregator(frames, layers=(23,))
    assert layers[23].dtype == torch.float32  # LayerScale's fp32 gamma keeps the residual stream fp32
    for key in ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf"):
        assert low[key].dtype == torch.float32
        err = float((low[key] - ref[key]).abs().max() / ref[key].abs().max())
        assert 1e-5 < err < 0.05, (key, err)  # bf16 really ran, and stayed close


def test_bf16_weights_match_fp32_weights_under_autocast(
    state_dict: dict[str, torch.Tensor], frames: torch.Tensor
) -> None:
    fp32 = fresh(state_dict, enable_track=False)
    bf16 = from_state_dict(get_config("tiny", enable_track=False), state_dict, dtype=torch.bfloat16)
    agg = bf16.aggregator
    assert agg.frame_blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert agg.patch_embed.patch_embed.proj.weight.dtype == torch.bfloat16
    # Norms, LayerScale, tokens, pos-embed and every head stay float32.
    assert agg.frame_blocks[0].norm1.weight.dtype == torch.float32
    assert agg.frame_blocks[0].ls1.gamma.dtype == torch.float32
    assert agg.patch_embed.pos_embed.dtype == torch.float32
    assert {p.dtype for p in bf16.depth_head.parameters()} == {torch.float32}
    assert {p.dtype for p in bf16.camera_head.parameters()} == {torch.float32}
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected = fp32(frames)
        got = bf16(frames)  # the bf16 aggregator enters autocast by itself
    for key in ("pose_enc", "depth", "world_points_conf"):
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6)
