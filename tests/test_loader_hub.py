"""``load_model`` from a Hub repo id, through huggingface_hub and a loopback Hub, then offline from the cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.helpers_hub import FakeHub
from vggtctl.errors import DownloadError
from vggtctl.paths import hf_hub_cache
from vggtctl.services.model_loader import load_model


def test_hub_source_then_offline(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = tiny_checkpoint.read_bytes()
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        commit = hub.add_repo(
            "someone/vggt-tiny", {"model.safetensors": data}, revisions={"v1": {"model.safetensors": data}}
        )
        model = load_model("someone/vggt-tiny", revision="v1")
        prov = model.provenance
        assert prov.kind == "hub" and prov.repo == "someone/vggt-tiny" and prov.preset == "tiny"
        assert prov.revision == hashlib.sha1(b"someone/vggt-tiny@v1").hexdigest() != commit
        assert prov.sha256 == hashlib.sha256(data).hexdigest()
        assert Path(prov.path).is_relative_to(hf_hub_cache() / "models--someone--vggt-tiny" / "snapshots")

        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        before = len(hub.requests)
        again = load_model("someone/vggt-tiny", revision="v1")
        assert again.provenance == prov and len(hub.requests) == before
        with pytest.raises(
            DownloadError, match="HF_HUB_OFFLINE is set and someone/vggt-tiny@main is not in the cache"
        ):
            load_model("someone/vggt-tiny")  # main was never downloaded
