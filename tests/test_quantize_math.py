"""Observers and the Hadamard rotation on planted data: what each one is for, measured."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from vggtctl.services.model_loader import load_model
from vggtctl.services.quantize.hadamard import fwht, rotated
from vggtctl.services.quantize.modules import QMAX
from vggtctl.services.quantize.observers import make_observer
from vggtctl.services.quantize.selection import plan_layers


def _fake_quant(x: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.clamp(torch.round(x / scale), -QMAX - 1, QMAX) * scale


def test_histogram_clips_outliers_that_minmax_keeps() -> None:
    """Heavy-tailed data (Student t, 3 dof: a few values far out, as transformer activations have)."""
    torch.manual_seed(0)
    data = torch.distributions.StudentT(3.0).sample((200_000,))
    scales = {}
    for kind in ("minmax", "histogram"):
        obs = make_observer(kind)
        obs.observe(data[:100_000])
        obs.observe(data[100_000:])
        scales[kind] = obs.scale()
    # min/max spends the grid on the single largest value; the L2 search clips the tail.
    assert scales["minmax"] == float(data.abs().max()) / QMAX
    assert scales["histogram"] < 0.9 * scales["minmax"]
    # ... which is what it optimises: a smaller quantization error over the data it saw.
    err = {k: float(((_fake_quant(data, s) - data) ** 2).mean()) for k, s in scales.items()}
    assert err["histogram"] < err["minmax"]
    # and the values inside the clipped range (all but the tail) are more precise still.
    bulk = data[data.abs() <= 127 * scales["histogram"]]
    assert bulk.numel() > 0.999 * data.numel()
    bulk_err = {k: float(((_fake_quant(bulk, s) - bulk) ** 2).mean()) for k, s in scales.items()}
    assert bulk_err["histogram"] < 0.8 * bulk_err["minmax"]


def test_fwht_is_orthonormal() -> None:
    x = torch.randn(3, 5, 96, dtype=torch.float64)
    y = fwht(x, 32)
    assert torch.allclose(fwht(y, 32), x, atol=1e-12)  # H H = I
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-12)


@pytest.mark.slow
def test_rotation_leaves_float_outputs_unchanged(tiny_checkpoint: Path) -> None:
    model = load_model(str(tiny_checkpoint))
    x = torch.rand(2, 3, 112, 168, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = model(x)
    plans, _ = plan_layers(model, attention=True, heads=False, patch_embed=True, rotate=True)
    names = [p.name for p in plans if p.rotate]
    assert len(names) == 2 * model.config.depth * 4
    for name in names:
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent), leaf, rotated(model.get_submodule(name)))
    with torch.inference_mode():
        out = model(x)
    # float32 rounding only: relative to each output's range, at most 1e-5 (a wrong rotation gives ~1).
    for key in ("depth", "world_points", "pose_enc", "depth_conf"):
        assert (out[key] - ref[key]).abs().max() <= 1e-5 * ref[key].abs().max(), key


def test_rotation_lowers_int8_error_with_outlier_channels() -> None:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    g = torch.Generator().manual_seed(0)
    layer = nn.Linear(256, 128)
    x = torch.randn(4, 64, 256, generator=g)
    x[..., [3, 77, 190]] *= 60.0  # planted outlier channels, as VGGT's activations have
    with torch.no_grad():
        ref = layer(x)
    errors = {}
    for name, candidate in (("plain", nn.Linear(256, 128)), ("hadamard", rotated(layer))):
        if name == "plain":
            candidate.load_state_dict(layer.state_dict())
        with torch.no_grad():
            assert (candidate(x) - ref).abs().max() < 1e-3  # float: the same function
        quantize_(candidate, Int8DynamicActivationInt8WeightConfig())
        with torch.no_grad():
            errors[name] = float((candidate(x) - ref).norm() / ref.norm())
    assert errors["hadamard"] < 0.5 * errors["plain"]


def test_static_int8_kernel_is_exact_integer_arithmetic() -> None:
    """StaticInt8Linear on CPU multiplies int8 by int8 into int32 (``torch._int_mm``): the result is the
    exact integer dot product times ``act_scale * weight_scale``, so it depends on no float summation
    order (thread count, blocking). The float-GEMM simulation of the same grid agrees to float rounding."""
    from vggtctl.services.quantize.modules import StaticInt8Linear

    g = torch.Generator().manual_seed(0)
    layer = nn.Linear(96, 64)
    x = torch.randn(3, 50, 96, generator=g)
    x[..., 5] *= 20.0  # an outlier channel: values beyond the calibrated range are clipped to it
    scale = float(x.abs().amax()) / QMAX / 4
    for per_tensor in (False, True):
        q = StaticInt8Linear(layer, scale, per_tensor_weight=per_tensor)
        with torch.no_grad():
            got = q(x)
            xq = torch.clamp(torch.round(x / scale), -QMAX - 1, QMAX).to(torch.int64)
            exact = (xq @ q.qweight.to(torch.int64).t()).to(torch.float64)
            ref = exact * scale * q.weight_scale.reshape(1, -1).double() + layer.bias.double()
            # float32 rounding of the int32 sum and of two products: a few ulp of the output's size.
            assert (got.double() - ref).abs().max() <= 1e-6 * ref.abs().max()
            sim = q.forward_simulated(x)
            assert (sim - got).abs().max() <= 1e-5 * got.abs().max()
            before = torch.get_num_threads()
            try:
                torch.set_num_threads(1)
                one = q(x)
            finally:
                torch.set_num_threads(before)
            assert torch.equal(one, got)
