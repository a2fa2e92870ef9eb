"""Bad inputs and bad checkpoints: clear errors that name the value; loading without copies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vggtctl.errors import CheckpointError, InputError, UsageError
from vggtctl.models.vggt.build import from_state_dict, infer_config
from vggtctl.models.vggt.config import get_config
from vggtctl.models.vggt.model import VGGT

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def state_dict(tiny_checkpoint: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(tiny_checkpoint))


@pytest.fixture(scope="module")
def model(state_dict: dict[str, torch.Tensor]) -> VGGT:
    return from_state_dict(get_config("tiny"), state_dict)


# ---------------------------------------------------------------- images and queries


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (torch.rand(3, 28, 28), r"rank 4 \[S,3,H,W\] or 5 \[B,S,3,H,W\], got rank 3 \(3, 28, 28\)"),
        (torch.rand(2, 4, 28, 28), r"3 colour channels in dim -3, got 4"),
        (
            torch.rand(1, 3, 100, 140),
            r"image size 100×140 \(H×W\) is not a positive multiple of the patch size 14",
        ),
        (torch.rand(0, 3, 28, 28), r"empty frame list: images have shape \(0, 3, 28, 28\)"),
        (torch.zeros(1, 3, 28, 28, dtype=torch.uint8), r"floating point in \[0, 1\], got dtype torch.uint8"),
        (torch.full((1, 3, 28, 28), float("nan")), r"NaN or infinite"),
        ([[0.5]], r"torch tensor or numpy array, got list"),
    ],
)
def test_bad_images_are_input_errors(model: VGGT, images: object, match: str) -> None:
    with pytest.raises(InputError, match=match) as err:
        model(images)  # type: ignore[arg-type]
    assert err.value.hint  # every error says what to do next


def test_aggregator_checks_its_input_too(model: VGGT) -> None:
    with pytest.raises(InputError, match="not a positive multiple of the patch size 14"):
        model.aggregator(torch.rand(1, 2, 3, 28, 30))
    with pytest.raises(UsageError, match=r"aggregator layer 24 does not exist \(valid: 0..23\)"):
        model.aggregator(torch.rand(1, 3, 28, 28), layers=(24,))


def test_values_outside_unit_range_warn_but_run(model: VGGT) -> None:
    images = torch.rand(1, 3, 28, 28) * 255
    with (
        pytest.warns(UserWarning, match=r"image values span \[.*\], expected \[0, 1\]"),
        torch.inference_mode(),
    ):
        out = model(images)
    assert out["depth"].shape == (1, 1, 28, 28, 1)


def test_numpy_images_are_accepted(model: VGGT) -> None:
    images = np.random.default_rng(0).random((2, 3, 28, 42), dtype=np.float32)
    with torch.inference_mode():
        a = model(images)
        b = model(torch.from_numpy(images))
    assert torch.equal(a["depth"], b["depth"])


def test_bad_track_queries(model: VGGT, tiny_reference: dict[str, np.ndarray]) -> None:
    images = torch.from_numpy(tiny_reference["input_images"])  # 140×210
    with pytest.raises(InputError, match=r"x=500, y=10.*outside the 210×140"):
        model(images, query_points=torch.tensor([[500.0, 10.0]]))
    with pytest.raises(InputError, match=r"at least 128 px on the short side.*112×112"):
        model(torch.rand(2, 3, 112, 112), query_points=torch.tensor([[10.0, 10.0]]))
    no_track = from_state_dict(get_config("tiny", enable_track=False), dict(model.state_dict()))
    with pytest.raises(UsageError, match="no track head"):
        no_track(images, query_points=torch.tensor([[10.0, 10.0]]))


# ---------------------------------------------------------------- checkpoints


def test_missing_keys_are_reported_grouped(state_dict: dict[str, torch.Tensor]) -> None:
    partial = {k: v for k, v in state_dict.items() if not k.startswith("aggregator.global_blocks.")}
    with pytest.raises(CheckpointError, match=r"missing 432 keys under aggregator\.global_blocks\.\*") as err:
        from_state_dict(get_config("tiny"), partial)
    assert "aggregator.global_blocks.0." in str(err.value)  # 24 blocks × 18 tensors
    assert err.value.hint


def test_unexpected_and_misshaped_keys(state_dict: dict[str, torch.Tensor]) -> None:
    extra = dict(state_dict)
    extra["aggregator.extra_token"] = torch.zeros(3)
    with pytest.raises(
        CheckpointError, match=r"unexpected 1 key under aggregator\.extra_token\.\*|unexpected 1 key"
    ):
        from_state_dict(get_config("tiny"), extra)
    bad = dict(state_dict)
    bad["camera_head.trunk.2.attn.qkv.weight"] = torch.zeros(384, 100)
    with pytest.raises(
        CheckpointError,
        match=r"1 key with wrong shape under camera_head\.trunk\.\* \(e\.g\. camera_head\.trunk\.2\.attn\.qkv\.weight: "
        r"checkpoint \[384, 100\], model \[384, 128\]\)",
    ):
        from_state_dict(get_config("tiny"), bad)


def test_checkpoint_of_another_preset_is_named(state_dict: dict[str, torch.Tensor]) -> None:
    with pytest.raises(
        CheckpointError,
        match=r"is a 'tiny' checkpoint \(heads: camera, point, depth, track\), not a 'vggt-1b' one: 1,787 differences",
    ) as err:
        from_state_dict(get_config("vggt-1b"), state_dict)
    assert "preset 'tiny'" in (err.value.hint or "")


def test_infer_config_from_shapes(state_dict: dict[str, torch.Tensor]) -> None:
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    assert infer_config(shapes) == get_config("tiny")
    no_track = {k: s for k, s in shapes.items() if not k.startswith("track_head.")}
    assert infer_config(no_track) == get_config("tiny", enable_track=False)
    ref = json.loads((DATA / "vggt_1b_keys.json").read_text())["state_dict"]
    assert infer_config({k: tuple(s) for k, s in ref}) == get_config("vggt-1b")
    broken = dict(shapes)
    broken["aggregator.camera_token"] = (1, 2, 1, 65)
    with pytest.raises(
        CheckpointError, match=r"matches no VGGT preset; closest is 'tiny' with 1 difference: .*camera_token"
    ):
        infer_config(broken)
    with pytest.raises(CheckpointError, match="empty"):
        infer_config({})


def test_load_assigns_without_copy_and_materialises_buffers(state_dict: dict[str, torch.Tensor]) -> None:
    model = from_state_dict(get_config("tiny"), state_dict)
    assert not model.training
    for key in (
        "aggregator.frame_blocks.7.mlp.fc1.weight",
        "depth_head.projects.0.weight",
        "track_head.tracker.query_ref_token",
    ):
        assert model.state_dict()[key].data_ptr() == state_dict[key].data_ptr()
    agg = model.aggregator
    assert agg._resnet_mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    assert agg._resnet_std.flatten().tolist() == pytest.approx([0.229, 0.224, 0.225])
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    # numpy arrays work too; keys of a disabled head are dropped on purpose.
    np_sd = {k: v.numpy() for k, v in state_dict.items()}
    depth_only = from_state_dict(get_config("tiny", enable_track=False, enable_point=False), np_sd)
    assert depth_only.point_head is None and depth_only.track_head is None
    with pytest.raises(UsageError, match="unsupported model dtype torch.float64"):
        from_state_dict(get_config("tiny"), state_dict, dtype=torch.float64)
