"""The model loader: every source kind, wrappers/prefixes, bad files, presets, provenance."""

from __future__ import annotations

import builtins
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vggtctl.errors import CheckpointError, InputError, UsageError
from vggtctl.services.model_loader import Provenance, load_model, resolve_source


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mapped_files() -> list[tuple[int, int, str]]:
    out = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6:
            a, b = (int(v, 16) for v in parts[0].split("-"))
            out.append((a, b, parts[5]))
    return out


@pytest.fixture(scope="module")
def tiny_model(tiny_checkpoint: Path) -> torch.nn.Module:
    return load_model(tiny_checkpoint)


def test_local_file_provenance_and_mmap(tiny_model: torch.nn.Module, tiny_checkpoint: Path) -> None:
    prov = tiny_model.provenance
    assert isinstance(prov, Provenance)
    assert prov.kind == "file" and prov.format == "safetensors" and prov.preset == "tiny"
    assert prov.path == str(tiny_checkpoint.resolve()) and prov.sha256 == _sha(tiny_checkpoint)
    assert prov.heads == ("camera", "point", "depth", "track") and prov.repo is None
    assert not tiny_model.training
    # The weights are the file's pages (memory-mapped), not a copy.
    if Path("/proc/self/maps").exists():
        ptr = tiny_model.aggregator.frame_blocks[0].attn.qkv.weight.data_ptr()
        owners = [name for a, b, name in _mapped_files() if a <= ptr < b]
        assert owners == [str(tiny_checkpoint.resolve())]


def test_tiny_source_is_generated_in_the_cache(tiny_model: torch.nn.Module) -> None:
    model = load_model("tiny")
    prov = model.provenance
    assert prov.kind == "tiny" and prov.preset == "tiny" and prov.source == "tiny"
    assert Path(prov.path) == Path(os.environ["VGGTCTL_HOME"]) / "weights" / "tiny" / "model.safetensors"
    assert prov.sha256 == _sha(Path(prov.path))
    ref = tiny_model.state_dict()  # the same seeded recipe as the conftest checkpoint, value for value
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, ref[k], rtol=0, atol=0)


def test_folder_and_pt_with_wrapper_and_module_prefix(
    tmp_path: Path, tiny_checkpoint: Path, tiny_model: torch.nn.Module
) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    shutil.copy(tiny_checkpoint, folder / "model.safetensors")
    assert load_model(folder).provenance.path == str((folder / "model.safetensors").resolve())

    sd = load_file(str(tiny_checkpoint))
    pt = tmp_path / "train_ckpt.pt"
    torch.save({"model": {f"module.{k}": v.clone() for k, v in sd.items()}, "epoch": 3, "lr": 1e-4}, pt)
    m = load_model(pt)
    assert m.provenance.format == "pt" and m.provenance.preset == "tiny"
    ref = tiny_model.state_dict()
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, ref[k], rtol=0, atol=0)


def test_checkpoint_without_track_head(tmp_path: Path, tiny_checkpoint: Path) -> None:
    from safetensors.torch import save_file

    sd = {k: v for k, v in load_file(str(tiny_checkpoint)).items() if not k.startswith("track_head.")}
    path = tmp_path / "no_track.safetensors"
    save_file(sd, str(path))
    inferred = load_model(path)
    given = load_model(path, preset="tiny")
    assert inferred.provenance.heads == given.provenance.heads == ("camera", "point", "depth")
    assert inferred.track_head is None and given.track_head is None


def test_truncated_safetensors(tmp_path: Path, tiny_checkpoint: Path) -> None:
    data = tiny_checkpoint.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated") as e:
        load_model(cut)
    assert str(cut) in e.value.message and e.value.hint
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="too short"):
        load_model(tiny)


def test_converted_read_equals_memory_map_then_convert(tiny_checkpoint: Path) -> None:
    from vggtctl.services.checkpoint_io import read_safetensors_converted

    def dtype_for(key: str) -> torch.dtype:
        return torch.bfloat16 if key.endswith("qkv.weight") else torch.float32

    mapped = load_file(str(tiny_checkpoint))
    got = read_safetensors_converted(tiny_checkpoint, dtype_for)
    assert list(sorted(got)) == list(sorted(mapped))
    for key, ref in mapped.items():
        assert got[key].dtype == dtype_for(key) and got[key].shape == ref.shape, key
        assert torch.equal(got[key], ref.to(dtype_for(key))), key
    # frame, global and patch-embed blocks (24 each) and the camera trunk (4)
    assert sum(got[k].dtype == torch.bfloat16 for k in got) == 24 * 3 + 4


def test_bf16_load_reads_without_mapping_the_file(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """A bf16 load converts while reading: the float32 file is not left mapped (nor resident)."""
    from vggtctl.models.vggt.build import from_state_dict
    from vggtctl.models.vggt.config import get_config

    copy = tmp_path / "bf16-source.safetensors"
    shutil.copyfile(tiny_checkpoint, copy)
    model = load_model(copy, dtype="bf16")
    if Path("/proc/self/maps").exists():
        assert str(copy.resolve()) not in {name for _, _, name in _mapped_files()}
    ref = from_state_dict(get_config("tiny"), load_file(str(tiny_checkpoint)), dtype=torch.bfloat16)
    ours = model.state_dict()
    for key, value in ref.state_dict().items():
        assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key
    assert model.aggregator.frame_blocks[0].mlp.fc1.weight.dtype == torch.bfloat16
    assert model.depth_head.norm.weight.dtype == torch.float32


def test_converted_read_rejects_inconsistent_entries(tmp_path: Path) -> None:
    import json
    import struct

    from vggtctl.services.checkpoint_io import read_safetensors_converted

    def write(path: Path, entry: dict, payload: bytes) -> Path:
        header = json.dumps({"w": entry}).encode()
        path.write_bytes(struct.pack("<Q", len(header)) + header + payload)
        return path

    bad_span = write(
        tmp_path / "span.safetensors", {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}, bytes(8)
    )
    with pytest.raises(CheckpointError, match="spans 8 bytes"):
        read_safetensors_converted(bad_span, lambda k: torch.float32)
    bad_dtype = write(
        tmp_path / "dt.safetensors", {"dtype": "F8_E9", "shape": [2], "data_offsets": [0, 2]}, bytes(2)
    )
    with pytest.raises(CheckpointError, match="unsupported safetensors dtype"):
        read_safetensors_converted(bad_dtype, lambda k: torch.float32)
    good = write(tmp_path / "ok.safetensors", {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                 struct.pack("<2f", 1.5, -2.0))  # fmt: skip
    out = read_safetensors_converted(good, lambda k: torch.bfloat16)
    assert out["w"].dtype == torch.bfloat16 and out["w"].tolist() == [1.5, -2.0]


class _Evil:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (builtins.open, (str(self.marker), "w"))


def test_pickle_with_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "payload": _Evil(marker)}, path)
    with pytest.raises(CheckpointError, match="refusing to load") as e:
        load_model(path)
    assert "safetensors" in (e.value.hint or "")
    assert not marker.exists()


def test_wrong_and_unknown_preset(tiny_checkpoint: Path) -> None:
    with pytest.raises(CheckpointError) as e:
        load_model(tiny_checkpoint, preset="vggt-1b")
    text = e.value.message + " " + (e.value.hint or "")
    assert "'vggt-1b'" in text and "'tiny'" in text
    with pytest.raises(UsageError, match="unknown model preset 'huge'"):
        load_model(tiny_checkpoint, preset="huge")


def test_not_a_vggt_checkpoint(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(3, 3)}, str(path))
    with pytest.raises(CheckpointError, match="matches no VGGT preset"):
        load_model(path)


def test_bad_sources(tmp_path: Path, tiny_checkpoint: Path) -> None:
    with pytest.raises(InputError, match="model file not found"):
        load_model(tmp_path / "missing.safetensors")
    with pytest.raises(InputError, match="model file not found"):
        resolve_source("./weights/model.pt")
    with pytest.raises(UsageError, match="neither a file"):
        resolve_source("weights")
    with pytest.raises(UsageError, match="applies to Hub repos"):
        resolve_source(str(tiny_checkpoint), revision="main")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="no weights file in"):
        resolve_source(empty)
    (tmp_path / "x.bin").write_bytes(b"0")
    with pytest.raises(InputError, match="unsupported weights file"):
        resolve_source(tmp_path / "x.bin")


def test_seeded_source_draws_the_preset_without_a_file(tiny_model: torch.nn.Module) -> None:
    """``seeded:PRESET``: the architecture with random weights, the loader's dtype rules, repeatable."""
    a = load_model("seeded:tiny", dtype="bf16")
    b = load_model("seeded:tiny", dtype="bf16")
    prov = a.provenance
    assert (prov.kind, prov.preset, prov.format, prov.path) == ("seeded", "tiny", "seeded", "")
    assert len(prov.sha256) == 64 and prov.sha256 == b.provenance.sha256
    sd, ref = a.state_dict(), tiny_model.state_dict()
    assert list(sd) == list(ref) and all(sd[k].shape == ref[k].shape for k in sd)
    assert all(torch.equal(sd[k], v) for k, v in b.state_dict().items())
    assert not all(torch.equal(sd[k].float(), ref[k].float()) for k in sd)  # not the tiny checkpoint's values
    # bf16 only for the aggregator's Linear layers, as a checkpoint loaded as bf16
    assert a.aggregator.frame_blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert a.camera_head is None or all(p.dtype == torch.float32 for p in a.camera_head.parameters())
    with pytest.raises(UsageError, match="names no preset"):
        load_model("seeded:huge")
    with pytest.raises(UsageError, match="names no preset"):
        load_model("seeded:tiny", preset="vggt-1b")


def test_predict_matches_reference(
    tiny_model: torch.nn.Module, tiny_reference: dict[str, np.ndarray]
) -> None:
    from vggtctl.services.infer import predict

    preds = predict(
        tiny_model, tiny_reference["input_images"], query_points=tiny_reference["input_query_points"]
    )
    for key in (
        "pose_enc",
        "depth",
        "depth_conf",
        "world_points",
        "world_points_conf",
        "extrinsic",
        "intrinsic",
    ):
        ref = tiny_reference[key][0]  # the reference keeps the batch dim
        assert preds[key].shape == ref.shape, key
        np.testing.assert_allclose(
            preds[key], ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()), err_msg=key
        )
    np.testing.assert_allclose(
        preds["pose_enc_list"], tiny_reference["pose_enc_list"][:, 0], rtol=1e-4, atol=1e-5
    )
    ref_wp = tiny_reference["world_points_from_depth"]
    np.testing.assert_allclose(
        preds["world_points_from_depth"], ref_wp, rtol=1e-4, atol=1e-4 * float(np.abs(ref_wp).max())
    )
    assert (
        preds["track"].shape == (3, 5, 2)
        and preds["vis"].shape == (3, 5)
        and preds["images"].shape == (3, 3, 140, 210)
    )
    assert all(v.dtype == np.float32 for v in preds.values())


def test_package_level_load_model_is_the_loader() -> None:
    import vggtctl
    from vggtctl.services import model_loader

    assert vggtctl.load_model is model_loader.load_model


def test_loader_layers_import_downward_only() -> None:
    """The hub is a leaf and checkpoint I/O knows no source kinds: no module imports the loader back."""
    import ast

    import vggtctl

    services = Path(vggtctl.__file__).parent / "services"

    def imported(module: str) -> set[str]:
        tree = ast.parse((services / f"{module}.py").read_text())
        return {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
        }

    loader_parts = {f"vggtctl.services.{m}" for m in ("model_loader", "weights", "checkpoint_io", "hub")}
    assert not imported("hub") & (loader_parts - {"vggtctl.services.hub"})
    assert not any(m.startswith("vggtctl.models") for m in imported("hub"))
    assert not imported("checkpoint_io") & loader_parts
    assert "vggtctl.services.model_loader" not in imported("weights") | imported("hashing") | imported(
        "provenance"
    )
