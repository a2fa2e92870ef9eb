"""The streamed export's writing side on CPU: the files it writes against ``save_pretrained``'s, the shards.

The 2-process ZeRO-3 run in test_train_vln.py checks it on partitioned weights; here the same writer takes a
plain model's tensors in the gather order, so every file can be compared with the non-ZeRO-3 export's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from vggtctl.services.vln.checkpoint import MERGER, VLN_JSON, export_model
from vggtctl.services.vln.config import VlnTrainConfig
from vggtctl.services.vln.hf_layout import SAFE_INDEX, SAFE_WEIGHTS
from vggtctl.services.vln.zero3_export import plan_export, write_streamed, write_whole
from vggtctl.services.vln.zero3_gather import bounded_groups, export_order


def _parts(path: Path, tie: bool):
    from vggtctl.services.vln.loading import load_qwen
    from vggtctl.services.vln.model import VlnModel
    from vggtctl.services.vln.tiny_qwen import write_tiny_qwen

    qwen, tokenizer, image_processor = load_qwen(str(write_tiny_qwen(path, tie_embeddings=tie).path))
    torch.manual_seed(0)
    return VlnModel(qwen, 64, 32, 0.2), tokenizer, image_processor


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def parts(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    return _parts(tmp_path_factory.mktemp("q") / "qwen", request.param)


def _stream(out: Path, parts, shard_bytes: int, group_bytes: int):
    """The ZeRO-3 export's writing, fed from a plain module in gather-sized groups; returns the writer."""
    model, tokenizer, image_processor = parts
    order = export_order(model)
    plan = plan_export(model.qwen, order, shard_bytes)
    groups = ([(e, e.tensor.detach().clone()) for e in g] for g in bounded_groups(order, group_bytes))
    writer = []
    export_model(out, model, tokenizer, image_processor, {"step": 1},
                 write_weights=lambda tmp: writer.append(write_streamed(tmp, model.qwen, plan, groups)))  # fmt: skip
    return writer[0]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_one_shard_writes_every_file_byte_for_byte_as_the_plain_export(parts, tmp_path: Path) -> None:
    model, tokenizer, image_processor = parts
    plain = export_model(tmp_path / "plain", model, tokenizer, image_processor, {"step": 1})
    _stream(tmp_path / "streamed", parts, shard_bytes=2048 * 2**20, group_bytes=2**14)
    want, got = _files(plain), _files(tmp_path / "streamed")
    assert set(got) == set(want) and SAFE_WEIGHTS in got and SAFE_INDEX not in got
    for name in want:  # weights, config.json, generation_config.json, merger, tokenizer files
        assert got[name] == want[name], name


def test_the_whole_state_dict_fallback_writes_the_plain_export(parts, tmp_path: Path) -> None:
    """transformers 4.x (no save helpers for the plan): rank 0 keeps every group and saves them at once."""
    model, tokenizer, image_processor = parts
    plain = export_model(tmp_path / "plain", model, tokenizer, image_processor, {"step": 1})
    groups = ([(e, e.tensor.detach().clone()) for e in g] for g in bounded_groups(export_order(model), 2**14))
    held = []
    export_model(tmp_path / "whole", model, tokenizer, image_processor, {"step": 1},
                 write_weights=lambda tmp: held.append(write_whole(tmp, model, groups)))  # fmt: skip
    want, got = _files(plain), _files(tmp_path / "whole")
    assert set(got) == set(want)
    for name in want:
        assert got[name] == want[name], name
    distinct = {id(t): t for t in model.state_dict(keep_vars=True).values()}.values()
    assert held == [sum(t.numel() * t.element_size() for t in distinct)]


def test_a_small_bound_writes_hf_shards_that_from_pretrained_reads_bit_for_bit(parts, tmp_path: Path) -> None:
    from safetensors.torch import load_file
    from transformers import Qwen2_5_VLForConditionalGeneration

    model, tokenizer, image_processor = parts
    plain = export_model(tmp_path / "plain", model, tokenizer, image_processor, {"step": 1})
    whole = load_file(plain / SAFE_WEIGHTS)
    shard, group = 40_000, 60_000  # the tiny model: ~470-600 kB, its embedding 147 kB
    writer = _stream(tmp_path / "sharded", parts, shard_bytes=shard, group_bytes=group)
    out = tmp_path / "sharded"

    index = json.loads((out / SAFE_INDEX).read_text())
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    n = len(shards)
    assert n >= 5 and not (out / SAFE_WEIGHTS).exists()
    assert shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    assert sorted(set(index["weight_map"].values())) == shards
    read: dict[str, torch.Tensor] = {}
    for name in shards:
        part = load_file(out / name)
        size = sum(t.numel() * t.element_size() for t in part.values())
        assert size <= shard or len(part) == 1, (name, size)  # a bigger tensor alone
        assert all(index["weight_map"][k] == name for k in part)
        read.update(part)
    assert set(read) == set(whole)  # today's key set: renamed keys, a tied lm_head saved once
    for key, value in whole.items():
        assert read[key].dtype == value.dtype and torch.equal(read[key], value), key
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in whole.values())
    assert index["metadata"]["total_parameters"] == model.qwen.num_parameters()

    loaded = Qwen2_5_VLForConditionalGeneration.from_pretrained(out)
    own = dict(model.qwen.named_parameters())
    for name, value in loaded.named_parameters():
        assert torch.equal(value, own[name]), name
    if model.qwen.config.tie_word_embeddings:
        assert loaded.lm_head.weight is loaded.get_input_embeddings().weight

    largest = max(t.numel() * t.element_size() for t in whole.values())
    model_bytes = sum(t.numel() * t.element_size() for t in read.values())
    assert writer.written[-1] == MERGER and writer.held_bytes == 0
    assert 0 < writer.peak_held_bytes <= max(shard, largest) + max(group, largest), writer.peak_held_bytes
    assert writer.peak_held_bytes < model_bytes / 2, (writer.peak_held_bytes, model_bytes)


def test_a_new_export_removes_the_weight_files_of_the_old_one(parts, tmp_path: Path) -> None:
    # from_pretrained reads model.safetensors before an index: a stale one would shadow new shards
    out = tmp_path / "export"
    _stream(out, parts, shard_bytes=2048 * 2**20, group_bytes=2**20)
    (out / "notes.txt").write_text("the user's")
    _stream(out, parts, shard_bytes=60_000, group_bytes=2**20)
    names = {p.name for p in out.iterdir()}
    assert SAFE_WEIGHTS not in names and SAFE_INDEX in names and "notes.txt" in names
    assert (out / VLN_JSON).is_file() and (out / MERGER).is_file()
    model, tokenizer, image_processor = parts
    export_model(out, model, tokenizer, image_processor, {"step": 2})
    names = {p.name for p in out.iterdir()}
    assert SAFE_WEIGHTS in names and SAFE_INDEX not in names and "notes.txt" in names
    assert not any(re.fullmatch(r"model-\d{5}-of-\d{5}\.safetensors", n) for n in names)


def test_export_shard_mb_must_be_positive() -> None:
    assert VlnTrainConfig().export_shard_mb == 2048.0
    problems = VlnTrainConfig(data="x", export_shard_mb=0, export_gather_mb=-1).problems()
    assert {p.fields for p in problems} >= {("export_shard_mb",), ("export_gather_mb",)}
