"""checkpoint_io: what a file is when it is not a checkpoint, whole refusal sentences, and the bf16
convert-while-reading path for every wrapper prefix."""

from __future__ import annotations

import builtins
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from vggtctl.errors import CheckpointError
from vggtctl.models.vggt.build import target_dtype
from vggtctl.services.checkpoint_io import prefix_map, read_torch_pickle
from vggtctl.services.model_loader import load_model, read_state_dict


def _message(e: pytest.ExceptionInfo[CheckpointError]) -> str:
    return e.value.message


def test_random_bytes_pt_is_not_called_pickled_code(tmp_path: Path) -> None:
    path = tmp_path / "random.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError) as e:
        load_model(path)
    msg = _message(e)
    assert msg.startswith(f"{path} is not a torch checkpoint: 4096 bytes, neither a torch.save zip archive")
    assert f"its first bytes are {path.read_bytes()[:8].hex()}" in msg
    assert "could run code" not in msg and "unpickl" not in msg and e.value.hint


def test_zip_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "notes.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "hello")
    with pytest.raises(
        CheckpointError, match="not a torch checkpoint: .* a zip archive without the data.pkl"
    ):
        read_torch_pickle(path)


def test_truncated_torch_file(tmp_path: Path) -> None:
    full = tmp_path / "full.pt"
    torch.save({"w": torch.arange(10000.0)}, full)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="is truncated or corrupt: .* zip archive"):
        read_torch_pickle(cut)


def test_legacy_torch_format_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    torch.save({"model": {"w": torch.arange(4.0)}}, path, _use_new_zipfile_serialization=False)
    assert read_torch_pickle(path)["w"].tolist() == [0.0, 1.0, 2.0, 3.0]


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (builtins.open, (str(self.marker), "w"))


def test_refusal_message_is_whole_sentences(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "payload": _Evil(marker)}, path)
    with pytest.raises(CheckpointError) as e:
        load_model(path)
    msg = _message(e)
    assert not marker.exists()
    assert msg.startswith(f"refusing to load {path}: it holds Python objects other than tensors")
    # torch's own reason, whole, and none of its advice to re-run with weights_only=False
    assert msg.endswith(
        "(torch says: Unsupported global: GLOBAL io.open was not an allowed global by default.)"
    )
    assert "Re-running" not in msg and msg.count("`") % 2 == 0 and "\x1b" not in msg


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "model.", "module._orig_mod."])
def test_bf16_reads_convert_for_every_prefix(tmp_path: Path, tiny_checkpoint: Path, prefix: str) -> None:
    """Each key is read straight into the dtype the model keeps it in, whatever the wrapper prefix."""
    sd = load_file(str(tiny_checkpoint))
    path = tmp_path / "wrapped.safetensors"
    save_file({prefix + k: v for k, v in sd.items()}, str(path))
    got, fmt = read_state_dict(path, torch.bfloat16)
    assert fmt == "safetensors" and sorted(got) == sorted(sd)
    for key, value in got.items():
        assert value.dtype == target_dtype(key, torch.bfloat16), key
        assert torch.equal(value, sd[key].to(value.dtype)), key
    assert sum(v.dtype == torch.bfloat16 for v in got.values()) == 578  # the aggregator's Linear layers
    model = load_model(path, dtype="bf16")
    if Path("/proc/self/maps").exists():  # converted while read: the float32 file is not left mapped
        assert str(path.resolve()) not in Path("/proc/self/maps").read_text()
    assert model.aggregator.frame_blocks[0].attn.qkv.weight.dtype == torch.bfloat16


def test_prefix_map_strips_only_shared_prefixes() -> None:
    assert prefix_map(["module.model.a", "module.model.b"]) == {"module.model.a": "a", "module.model.b": "b"}
    assert prefix_map(["module.a", "b"]) == {"module.a": "module.a", "b": "b"}
    assert list(prefix_map(["_orig_mod.module.w", "_orig_mod.module.v"]).values()) == ["w", "v"]
    assert prefix_map(["model.aggregator.x"]) == {"model.aggregator.x": "aggregator.x"}
