"""State-dict layout: the 1B key list (meta device, no allocation), tiny shapes, head switches, names."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vggtctl.errors import UsageError
from vggtctl.models.vggt.build import build_empty, expected_shapes
from vggtctl.models.vggt.config import PRESETS, VGGTConfig, get_config, preset_name
from vggtctl.models.vggt.tiny import draw, init_stats, tiny_state_dict

DATA = Path(__file__).parent / "data"


def reference_1b() -> list[tuple[str, tuple[int, ...]]]:
    data = json.loads((DATA / "vggt_1b_keys.json").read_text())
    return [(k, tuple(s)) for k, s in data["state_dict"]]


def test_vggt_1b_state_dict_keys_shapes_and_order_on_meta() -> None:
    model = build_empty(get_config("vggt-1b"))
    sd = model.state_dict()
    got = [(k, tuple(v.shape)) for k, v in sd.items()]
    assert got == reference_1b()
    assert len(got) == 1797
    assert all(v.is_meta for v in sd.values())
    assert sum(p.numel() for p in model.parameters()) == 1_256_537_516
    per_module = {name: sum(p.numel() for p in m.parameters()) for name, m in model.named_children()}
    assert per_module == {
        "aggregator": 909_112_320,
        "camera_head": 216_174_610,
        "point_head": 32_654_628,
        "depth_head": 32_654_562,
        "track_head": 65_941_396,
    }
    # The ImageNet mean/std are non-persistent buffers: not in the state dict.
    assert {n for n, _ in model.named_buffers()} == {"aggregator._resnet_mean", "aggregator._resnet_std"}


def test_tiny_has_the_same_keys_with_tiny_shapes() -> None:
    tiny = expected_shapes(get_config("tiny"))
    big = reference_1b()
    assert [k for k, _ in tiny] == [k for k, _ in big]
    shapes = dict(tiny)
    assert shapes["aggregator.patch_embed.pos_embed"] == (1, 145, 64)  # 12×12 grid + cls (img_size 168)
    assert shapes["track_head.tracker.query_ref_token"] == (1, 2, 100)  # 3·32 + 4
    assert sum(math.prod(s) for _, s in tiny) == 6_553_196


@pytest.mark.parametrize("head", ["camera", "point", "depth", "track"])
def test_disabled_head_has_no_keys(head: str) -> None:
    config = get_config("vggt-1b", **{f"enable_{head}": False})
    keys = [k for k, _ in expected_shapes(config)]
    assert not any(k.startswith(f"{head}_head.") for k in keys)
    full = [k for k, _ in reference_1b()]
    assert keys == [k for k in full if not k.startswith(f"{head}_head.")]
    assert getattr(build_empty(config), f"{head}_head") is None


def test_tiny_recipe_is_seeded_per_key() -> None:
    sd = tiny_state_dict()
    assert list(sd) == [k for k, _ in reference_1b()]
    # Same key → same draw regardless of order; different keys → different streams.
    again = draw("aggregator.camera_token", (1, 2, 1, 64))
    assert again.dtype == np.float32
    assert (again == sd["aggregator.camera_token"]).all()
    assert not (sd["depth_head.norm.weight"] == sd["point_head.norm.weight"]).all()
    # (mean, std) by kind, from the recipe.
    assert init_stats("camera_head.pose_branch.fc2.bias", (9,)) == (0.25, 0.02)
    assert init_stats("aggregator.frame_blocks.0.ls1.gamma", (64,)) == (0.1, 0.02)
    assert init_stats("aggregator.frame_blocks.0.norm1.weight", (64,)) == (1.0, 0.1)
    assert init_stats("point_head.resize_layers.0.weight", (16, 16, 4, 4)) == (0.0, 0.25)
    assert init_stats("aggregator.frame_blocks.0.attn.qkv.weight", (192, 64)) == (0.0, 0.125)
    gamma = sd["aggregator.frame_blocks.3.ls2.gamma"]
    assert abs(float(gamma.mean()) - 0.1) < 0.01 and abs(float(gamma.std()) - 0.02) < 0.006


def test_presets_and_config_errors() -> None:
    assert set(PRESETS) == {"vggt-1b", "tiny"}
    assert get_config("vggt-1b") == VGGTConfig()
    assert preset_name(get_config("tiny", enable_track=False)) == "tiny"
    with pytest.raises(UsageError, match="unknown model preset 'vggt-2b'"):
        get_config("vggt-2b")
    with pytest.raises(UsageError, match="unknown VGGT config field"):
        get_config("tiny", embed_dims=3)
    with pytest.raises(UsageError, match="patch_embed_dim 1024 != embed_dim 512"):
        get_config("vggt-1b", embed_dim=512)
    with pytest.raises(UsageError, match=r"dpt_layers \[30\]"):
        get_config("vggt-1b", dpt_layers=(4, 11, 17, 30))


def test_block_names_address_parameters_by_index() -> None:
    model = build_empty(get_config("vggt-1b"))
    names = model.block_module_names(("frame",), indices=[0, -1])
    assert names == ["aggregator.frame_blocks.0", "aggregator.frame_blocks.23"]
    assert len(model.block_module_names()) == 48
    assert len(model.block_module_names(("patch_embed",))) == 24
    lora = model.lora_target_names(("global",), indices=[7])
    assert lora == [
        f"aggregator.global_blocks.7.{s}" for s in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
    ]
    for name in lora:
        assert isinstance(model.get_submodule(name), torch.nn.Linear)
    with pytest.raises(UsageError, match="aggregator layer 24 does not exist"):
        model.block_module_names(("frame",), indices=[24])
    with pytest.raises(UsageError, match="unknown block kind 'camera'"):
        model.block_module_names(("camera",))
