"""`vggtctl download weights` through the root CLI: tiny preset, loopback Hub, dry run, mapped errors."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.helpers_cli import run_cli
from tests.helpers_hub import FakeHub
from vggtctl.cli.app import app
from vggtctl.paths import hf_hub_cache, vggtctl_home

runner = CliRunner()
DATA = b"weights!" * 4096


def _assert_same_tensors(a: Path, b: Path) -> None:
    # Values, not bytes: safetensors may order the header's metadata differently from run to run.
    import numpy as np
    from safetensors.numpy import load_file

    ta, tb = load_file(str(a)), load_file(str(b))
    assert list(ta) == list(tb)
    for k in ta:
        np.testing.assert_array_equal(ta[k], tb[k])


def _invoke(*args: Any) -> Any:
    return runner.invoke(app, ["download", "weights", *[str(a) for a in args]])


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with FakeHub() as h:
        monkeypatch.setenv("HF_ENDPOINT", h.url)
        yield h


def test_preset_tiny_writes_the_seeded_checkpoint(tmp_path: Path, tiny_checkpoint: Path) -> None:
    r = _invoke("--preset", "tiny", "--local-dir", tmp_path / "w", "--json")
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    path = tmp_path / "w" / "model.safetensors"
    assert d["path"] == str(path.resolve()) and d["source"] == "generated"
    assert d["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    _assert_same_tensors(path, tiny_checkpoint)  # the seeded recipe, value for value
    # Without --local-dir it goes to the vggtctl cache, where --model tiny finds it.
    r = _invoke("--preset", "tiny")
    assert r.exit_code == 0, r.stderr
    cached = vggtctl_home() / "weights" / "tiny" / "model.safetensors"
    assert cached.is_file() and f"path: {cached.resolve()}" in r.stdout
    assert f"sha256: {hashlib.sha256(cached.read_bytes()).hexdigest()}" in r.stdout
    assert "use it: vggtctl infer IMAGES --model" in r.stdout


def test_hub_download_dry_run_and_cache(hub: FakeHub) -> None:
    commit = hub.add_repo("org/vggt", {"model.safetensors": DATA})
    r = _invoke("--repo", "org/vggt", "--dry-run", "--json")
    assert r.exit_code == 0, r.stderr
    dry = json.loads(r.stdout)
    assert dry["dry_run"] and not dry["cached"] and dry["size"] == len(DATA) and dry["commit"] == commit
    assert not Path(dry["path"]).exists()
    r = _invoke("--repo", "org/vggt", "--json")
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["downloaded"] and d["sha256"] == hashlib.sha256(DATA).hexdigest()
    assert d["path"] == str(hf_hub_cache() / "models--org--vggt" / "snapshots" / commit / "model.safetensors")
    r = _invoke("--repo", "org/vggt")
    assert r.exit_code == 0 and "already cached" in r.stdout and f"commit: {commit}" in r.stdout


def test_hub_errors_are_mapped(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add_repo("org/gated", {"model.safetensors": DATA}, gated_token="hf_ok")
    r = _invoke("--repo", "org/gated")
    assert r.exit_code == 1 and r.stdout == ""
    assert "Error: org/gated is a gated repository" in r.stderr and "Hint: accept the terms at" in r.stderr
    r = _invoke("--repo", "org/missing")
    assert r.exit_code == 1 and "Error: repository 'org/missing' not found" in r.stderr
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = _invoke("--repo", "org/other", "--json")
    assert r.exit_code == 1 and r.stdout == ""
    assert "HF_HUB_OFFLINE is set" in r.stderr and "model.safetensors" in r.stderr


def test_usage_errors_exit_2() -> None:
    r = run_cli("download", "weights", "--preset", "huge")
    assert r.exit_code == 2 and r.stderr.splitlines() == [
        "Error: Invalid value for '--preset': unknown preset 'huge' (known: tiny, vggt-1b)",
        "Hint: see `vggtctl download weights --help` for the options and their values",
    ]
    r = _invoke("--preset", "vggt-1b")
    assert r.exit_code == 2 and "only the tiny checkpoint" in r.stderr
    r = _invoke("--repo", "no slash here")
    assert r.exit_code == 2 and "is not a Hub repo id" in r.stderr
