"""Hub weights through the real huggingface_hub against a loopback Hub (never the network)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers_hub import FakeHub
from vggtctl.errors import DownloadError, UsageError
from vggtctl.paths import hf_hub_cache
from vggtctl.services.hashing import file_sha256
from vggtctl.services.hub import fetch_weights
from vggtctl.services.weights import download_weights

ST = b"safetensors-bytes-" * 1000
PT = b"torch-pickle-bytes" * 500


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # a fresh cache per test
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with FakeHub() as h:
        monkeypatch.setenv("HF_ENDPOINT", h.url)
        yield h


class RecordingProgress:
    def __init__(self) -> None:
        self.tasks: list[dict[str, Any]] = []
        self.messages: list[str] = []

    def task(self, description: str, total: float | None = None, unit: str = "it") -> Any:
        rec = {"description": description, "total": total, "unit": unit, "done": 0.0, "closed": False}
        self.tasks.append(rec)

        class T:
            def advance(self, n: float = 1) -> None:
                rec["done"] += n

            def update(
                self,
                *,
                completed: float | None = None,
                total: float | None = None,
                description: str | None = None,
            ) -> None:
                if total is not None:
                    rec["total"] = total

            def close(self) -> None:
                rec["closed"] = True

        return T()

    def log(self, message: str) -> None:
        self.messages.append(message)


def test_download_to_cache_then_cached(hub: FakeHub) -> None:
    commit = hub.add_repo("org/vggt", {"model.safetensors": ST, "model.pt": PT})
    progress = RecordingProgress()
    w = fetch_weights("org/vggt", progress=progress)
    assert w.filename == "model.safetensors" and w.commit == commit and w.downloaded and not w.cached
    assert w.path == hf_hub_cache() / "models--org--vggt" / "snapshots" / commit / "model.safetensors"
    assert w.path.read_bytes() == ST and w.size == len(ST)
    assert w.sha256 == hashlib.sha256(ST).hexdigest()
    assert (hf_hub_cache() / "models--org--vggt" / "refs" / "main").read_text() == commit
    dl = [t for t in progress.tasks if t["description"].startswith("download")]
    assert dl and dl[0]["unit"] == "B" and dl[0]["total"] == len(ST) and dl[0]["done"] == len(ST)
    again = fetch_weights("org/vggt")
    assert again.cached and not again.downloaded and again.path == w.path


def test_falls_back_to_model_pt(hub: FakeHub) -> None:
    hub.add_repo("org/pt-only", {"model.pt": PT})
    w = fetch_weights("org/pt-only")
    assert w.filename == "model.pt" and w.path.read_bytes() == PT


def test_revision_pin(hub: FakeHub) -> None:
    hub.add_repo("org/vggt", {"model.safetensors": ST}, revisions={"v1": {"model.safetensors": b"old" * 10}})
    w = fetch_weights("org/vggt", revision="v1")
    assert w.path.read_bytes() == b"old" * 10 and w.revision == "v1"
    assert w.commit == hashlib.sha1(b"org/vggt@v1").hexdigest()
    with pytest.raises(DownloadError, match="revision 'nope' not found in org/vggt"):
        fetch_weights("org/vggt", revision="nope")


def test_offline_uses_cache_without_requests(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add_repo("org/vggt", {"model.safetensors": ST})
    first = fetch_weights("org/vggt")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = len(hub.requests)
    w = fetch_weights("org/vggt")
    assert w.path == first.path and w.cached and w.commit == first.commit
    assert len(hub.requests) == n  # not a single request


def test_offline_without_cache_names_missing_files(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError) as e:
        fetch_weights("facebook/VGGT-1B")
    msg = e.value.message
    assert "HF_HUB_OFFLINE" in msg and "model.safetensors" in msg and "model.pt" in msg
    assert str(hf_hub_cache()) in msg
    assert "vggtctl download weights --repo facebook/VGGT-1B" in (e.value.hint or "")
    assert hub.requests == []


def test_gated_repo_needs_token(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add_repo("org/gated", {"model.safetensors": ST}, gated_token="hf_secret")
    with pytest.raises(DownloadError, match="gated") as e:
        fetch_weights("org/gated")
    assert "HF_TOKEN" in (e.value.hint or "")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    w = fetch_weights("org/gated")
    assert w.path.read_bytes() == ST
    assert hub.requests[-1]["auth"] == "Bearer hf_secret"


def test_missing_repo_and_missing_files(hub: FakeHub) -> None:
    hub.add_repo("org/empty", {"README.md": b"hi"})
    with pytest.raises(DownloadError, match="repository 'org/nope' not found"):
        fetch_weights("org/nope")
    with pytest.raises(DownloadError, match="none of the weight files model.safetensors, model.pt"):
        fetch_weights("org/empty")
    with pytest.raises(UsageError, match="not a Hub repo id"):
        fetch_weights("not a repo")


# A refused connection fails at once (huggingface_hub alone retried it with backoff for ~25 s).
def test_unreachable_endpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(DownloadError, match="cannot reach http://127.0.0.1"):
        fetch_weights("org/vggt")


def test_local_dir_and_dry_run(hub: FakeHub, tmp_path: Path) -> None:
    commit = hub.add_repo("org/vggt", {"model.safetensors": ST})
    dest = tmp_path / "weights"
    dry = download_weights("org/vggt", local_dir=dest, dry_run=True)
    assert not dry.cached and dry.size == len(ST) and dry.sha256 is None
    assert not (dest / "model.safetensors").exists()
    w = download_weights("org/vggt", local_dir=dest)
    assert w.path == (dest / "model.safetensors").resolve() and w.path.read_bytes() == ST
    assert w.commit == commit and w.sha256 == hashlib.sha256(ST).hexdigest()
    dry2 = download_weights("org/vggt", local_dir=dest, dry_run=True)
    assert dry2.cached and dry2.sha256 == w.sha256


def test_corrupt_file_is_detected(hub: FakeHub) -> None:
    hub.add_repo("org/bad", {"model.safetensors": ST}, bad_etag=True)
    with pytest.raises(DownloadError, match="the file is corrupt"):
        fetch_weights("org/bad")


def test_file_sha256_is_cached_by_mtime(tmp_path: Path) -> None:
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    assert file_sha256(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    f.write_bytes(b"abcd")  # new size -> re-hashed, not served from the cache
    assert file_sha256(f) == hashlib.sha256(b"abcd").hexdigest()
