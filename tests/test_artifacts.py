"""register_artifact with a toy artifact kind: a folder holding a base checkpoint and a scale for one head.

It stands for what quantized exports and LoRA run directories will be: a folder the plain state-dict
path cannot read, built by its own loader, with provenance (base, adapter, folder sha256) kept in one place.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from vggtctl.services import model_loader
from vggtctl.services.hashing import folder_sha256
from vggtctl.services.model_loader import (
    AdapterInfo,
    Provenance,
    ResolvedSource,
    load_model,
    model_from_state_dict,
    provenance_of,
    read_state_dict,
    register_artifact,
    registered_artifacts,
)

MANIFEST = "toy-artifact.json"


class ToyKind:
    """Detect: a folder with toy-artifact.json. Load: the base weights with the depth head scaled."""

    def __init__(self) -> None:
        self.detect_calls: list[Path] = []

    def detect(self, path: Path) -> bool:
        self.detect_calls.append(path)
        return path.is_dir() and (path / MANIFEST).is_file()

    def load(self, resolved: ResolvedSource, *, preset: Any, device: Any, dtype: Any, progress: Any) -> Any:
        spec = json.loads((resolved.path / MANIFEST).read_text())
        sd, _ = read_state_dict(resolved.path / spec["base"], dtype)
        sd = {k: v * spec["scale"] if k.startswith("depth_head.") else v for k, v in sd.items()}
        model = model_from_state_dict(sd, preset, device=device, dtype=dtype)
        if spec.get("with_adapter"):  # a loader may record its own provenance: load_model keeps it
            base = Provenance(
                "base", "file", str(resolved.path / spec["base"]), None, None, "0" * 64, "tiny", "safetensors"
            )
            model.provenance = Provenance(
                source=resolved.source, kind=resolved.kind, path=str(resolved.path), repo=None, revision=None,
                sha256=folder_sha256(resolved.path), preset="tiny", format="toy", heads=tuple(model.config.heads),
                base=base, adapter=AdapterInfo(str(resolved.path / MANIFEST), "1" * 64),
            )  # fmt: skip
        return model


@pytest.fixture
def toy() -> Iterator[ToyKind]:
    kind = ToyKind()
    register_artifact("toy", kind.detect, kind.load)
    register_artifact("toy", kind.detect, kind.load)  # a module imported twice registers twice
    yield kind
    model_loader.unregister_artifact("toy")


@pytest.fixture
def artifact(tmp_path: Path, tiny_checkpoint: Path) -> Path:
    folder = tmp_path / "toy-run"
    folder.mkdir()
    shutil.copy(tiny_checkpoint, folder / "base.safetensors")
    (folder / MANIFEST).write_text(json.dumps({"base": "base.safetensors", "scale": 2.0}))
    return folder


def test_registering_twice_keeps_one_kind(toy: ToyKind) -> None:
    assert registered_artifacts().count("toy") == 1


def test_toy_artifact_loads_once_detected_with_folder_sha256(
    toy: ToyKind, artifact: Path, tiny_checkpoint: Path
) -> None:
    model = load_model(artifact)
    assert toy.detect_calls == [artifact]  # asked once for this load, whatever the registrations
    prov = provenance_of(model)
    assert (
        prov is not None
        and prov.format == "toy"
        and prov.kind == "file"
        and prov.path == str(artifact.resolve())
    )
    manifest = "".join(
        f"{name}\0{hashlib.sha256((artifact / name).read_bytes()).hexdigest()}\n"
        for name in ("base.safetensors", MANIFEST)
    )
    assert prov.sha256 == hashlib.sha256(manifest.encode()).hexdigest()  # folders are hashed too
    base = load_model(tiny_checkpoint)
    torch.testing.assert_close(
        model.depth_head.projects[0].weight, 2.0 * base.depth_head.projects[0].weight, rtol=0, atol=0
    )
    torch.testing.assert_close(model.aggregator.camera_token, base.aggregator.camera_token, rtol=0, atol=0)


def test_plain_checkpoints_ask_each_kind_once(toy: ToyKind, tiny_checkpoint: Path) -> None:
    folder = tiny_checkpoint.parent
    load_model(folder)
    # the folder (not a toy artifact), then the weights file picked inside it: one question each
    assert toy.detect_calls == [folder, folder / "model.safetensors"]


def test_artifact_provenance_with_base_and_adapter_is_kept(toy: ToyKind, artifact: Path) -> None:
    spec = json.loads((artifact / MANIFEST).read_text())
    (artifact / MANIFEST).write_text(json.dumps({**spec, "with_adapter": True}))
    prov = provenance_of(load_model(artifact))
    assert prov is not None and prov.base is not None and prov.base.source == "base"
    assert prov.adapter == AdapterInfo(str(artifact / MANIFEST), "1" * 64)
    d = prov.to_dict()
    assert d["base"]["path"].endswith("base.safetensors") and d["adapter"]["method"] == "lora"
