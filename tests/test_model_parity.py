"""Reference parity of the seeded tiny VGGT: every output, derived camera/point and intermediate.

Ground truth: ``tests/data/tiny_reference.npz``, produced by the reference implementation (float32,
CPU) with the same seeded weights. A correct implementation agrees to ~1e-6; a wrong quirk
(LayerNorm eps, RoPE layout, in-place ReLU of the DPT residual unit, cx = W/2, ...) shows as ≥ 1e-2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vggtctl.models.vggt.build import from_state_dict
from vggtctl.models.vggt.config import get_config
from vggtctl.models.vggt.geometry import pose_encoding_to_extri_intri, unproject_depth_map_to_point_map
from vggtctl.models.vggt.model import VGGT

TOL = 1e-4


def rel_err(a: torch.Tensor | np.ndarray, b: np.ndarray) -> float:
    """max|a-b| / max|b| in float64."""
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def model(tiny_checkpoint: Path) -> VGGT:
    from safetensors.torch import load_file

    return from_state_dict(get_config("tiny"), load_file(str(tiny_checkpoint)))


@pytest.fixture(scope="module")
def outputs(model: VGGT, tiny_reference: dict[str, np.ndarray]) -> dict[str, object]:
    images = torch.from_numpy(tiny_reference["input_images"])
    queries = torch.from_numpy(tiny_reference["input_query_points"])
    with torch.inference_mode():
        return model(images, query_points=queries)


# track/vis/conf are compared in tests/test_model_track.py: the tracker's linear-frequency flow embedding
# amplifies float32 rounding (1e-7 relative in its inputs moves tracks by ~0.5 px after 4 iterations on the
# random tiny weights), so they are checked against the spread of a float-noise ensemble, not at 1e-4.
@pytest.mark.parametrize("key", ["pose_enc", "depth", "depth_conf", "world_points", "world_points_conf"])
def test_forward_outputs_match_reference(outputs: dict[str, object], tiny_reference: dict, key: str) -> None:
    assert rel_err(outputs[key], tiny_reference[key]) < TOL  # type: ignore[arg-type]


def test_pose_enc_list_and_images(outputs: dict[str, object], tiny_reference: dict) -> None:
    lst = outputs["pose_enc_list"]
    assert isinstance(lst, list) and len(lst) == 4
    assert rel_err(torch.stack(lst), tiny_reference["pose_enc_list"]) < TOL
    # The last iteration is the prediction; earlier ones really differ (the refinement does something).
    assert torch.equal(lst[-1], outputs["pose_enc"])  # type: ignore[arg-type]
    assert rel_err(lst[0], tiny_reference["pose_enc_list"][-1]) > 1e-3
    assert torch.equal(outputs["images"], torch.from_numpy(tiny_reference["input_images"])[None])  # type: ignore[arg-type]
    for key in ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf"):
        assert outputs[key].dtype == torch.float32  # type: ignore[union-attr]


def test_derived_cameras_and_points_match_reference(outputs: dict[str, object], tiny_reference: dict) -> None:
    h, w = tiny_reference["input_images"].shape[-2:]
    extrinsic, intrinsic = pose_encoding_to_extri_intri(outputs["pose_enc"], (h, w))  # type: ignore[arg-type]
    assert rel_err(extrinsic, tiny_reference["extrinsic"]) < TOL
    assert rel_err(intrinsic, tiny_reference["intrinsic"]) < TOL
    points = unproject_depth_map_to_point_map(outputs["depth"][0], extrinsic[0], intrinsic[0])  # type: ignore[index]
    assert points.dtype == np.float32
    assert rel_err(points, tiny_reference["world_points_from_depth"]) < TOL


def test_patch_embed_and_aggregator_intermediates(model: VGGT, tiny_reference: dict) -> None:
    images = torch.from_numpy(tiny_reference["input_images"])
    agg = model.aggregator
    with torch.inference_mode():
        normed = (images[None] - agg._resnet_mean) / agg._resnet_std
        patch = agg.patch_embed(normed[0])
        layers, patch_start_idx = agg(images, layers=(4, 11, 17, 23))
    assert rel_err(patch, tiny_reference["inter_patch_embed_x_norm_patchtokens"]) < TOL
    assert patch_start_idx == int(tiny_reference["inter_patch_start_idx"]) == 5
    assert len(layers) == 24
    for i in (4, 11, 17, 23):
        assert rel_err(layers[i], tiny_reference[f"inter_aggregator_layer{i:02d}"]) < TOL
    assert all(layers[i] is None for i in range(24) if i not in (4, 11, 17, 23))


@pytest.mark.parametrize("path", ["onednn", "aten"])
def test_both_cpu_linear_paths_match_reference(
    model: VGGT, tiny_reference: dict, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fused oneDNN GEMM(+GELU) path (used for large GEMMs) and the plain aten path agree with the reference."""
    from vggtctl.models.vggt import layers

    if path == "onednn":
        if not layers._HAS_ONEDNN:
            pytest.skip("this torch build has no oneDNN linear")
        monkeypatch.setattr(layers, "_ONEDNN_MIN_MACS", 0)  # route every Linear through oneDNN
    else:
        monkeypatch.setattr(layers, "_ONEDNN_LINEAR", False)
    images = torch.from_numpy(tiny_reference["input_images"])
    calls = []
    real = torch.ops.mkldnn._linear_pointwise
    monkeypatch.setattr(
        layers.torch.ops.mkldnn, "_linear_pointwise", lambda *a: calls.append(1) or real(*a), raising=False
    )
    with torch.inference_mode():
        out = model(images)
    assert (len(calls) > 0) == (path == "onednn")
    for key in ("pose_enc", "depth", "world_points_conf"):
        assert rel_err(out[key], tiny_reference[key]) < TOL
