"""The tiny VGGT on CUDA: reference parity in float32, bf16 weights/autocast with float32 heads.

Skipped without CUDA (marker ``gpu``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vggtctl.models.vggt.build import from_state_dict
from vggtctl.models.vggt.config import get_config

pytestmark = pytest.mark.gpu
DENSE = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf")


def rel_err(a: torch.Tensor, b: np.ndarray) -> float:
    a64 = a.detach().float().cpu().numpy().astype(np.float64)
    return float(np.abs(a64 - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def state_dict(tiny_checkpoint: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(tiny_checkpoint))


def test_cuda_float32_matches_reference(state_dict: dict, tiny_reference: dict) -> None:
    model = from_state_dict(get_config("tiny", enable_track=False), state_dict, device="cuda")
    assert model.aggregator._resnet_mean.device.type == "cuda"
    images = torch.from_numpy(tiny_reference["input_images"]).cuda()
    with torch.inference_mode():
        out = model(images)
    for key in DENSE:
        # cuDNN may use TF32 convolutions: allow a little more than on CPU.
        assert rel_err(out[key], tiny_reference[key]) < 5e-3, key


def test_cuda_bf16_weights_keep_heads_float32(state_dict: dict, tiny_reference: dict) -> None:
    model = from_state_dict(
        get_config("tiny", enable_track=False), state_dict, device="cuda", dtype=torch.bfloat16
    )
    images = torch.from_numpy(tiny_reference["input_images"]).cuda()
    with torch.inference_mode():
        out = model(images)
    for key in DENSE:
        assert out[key].dtype == torch.float32
        assert 0 < rel_err(out[key], tiny_reference[key]) < 0.05, key
