"""CUDA paths of `vggtctl quantize` (skipped without a GPU; not run in CPU-only CI)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vggtctl.services.model_loader import load_model
from vggtctl.services.quantize import QuantizeConfig
from vggtctl.services.quantize.run import quantize

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize(("qtype", "bits"), [("dynamic", 8), ("weight-only", 8), ("weight-only", 4)])
def test_cuda_artifact_roundtrip(qtype: str, bits: int, tiny_checkpoint: Path, tmp_path: Path) -> None:
    config = QuantizeConfig(
        model=str(tiny_checkpoint),
        out=tmp_path / "q",
        type=qtype,
        bits=bits,
        device="cuda",
        quantize_heads=True,
        compare=True,
        compare_frames=2,
        repeats=2,
    )
    result = quantize(config)
    assert result.device == "cuda"
    err = result.report["error"]
    assert err["depth_absrel"] < (0.05 if bits == 8 else 0.15)
    model = load_model(tmp_path / "q", device="cuda")
    x = torch.rand(2, 3, 112, 168, device="cuda")
    with torch.inference_mode():
        a, b = model(x), model(x)
    assert torch.equal(a["depth"], b["depth"]) and a["depth"].is_cuda
