"""Offline and unreachable Hubs: fail in one connection attempt with one Error + Hint, or use the cache.

The CLI runs in a real subprocess under ``tests/scripts/cli_counting_connects.py``, which counts the TCP
connections the process attempts (CPython's ``socket.connect`` audit event).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers_hub import FakeHub
from tests.netguard import PROXY_VARS
from vggtctl.errors import HostUnreachableError
from vggtctl.services.hub import fetch_weights

SCRIPT = Path(__file__).parent / "scripts" / "cli_counting_connects.py"
ROOT = Path(__file__).resolve().parents[1]


def _run_cli(tmp_path: Path, args: list[str], **env: str) -> tuple[subprocess.CompletedProcess[str], list]:
    count_file = tmp_path / "connects.json"
    full_env = {
        k: v for k, v in os.environ.items() if k not in PROXY_VARS and not k.startswith("HF_HUB_OFFLINE")
    }
    full_env.update(PYTHONPATH=str(ROOT), HF_HOME=str(tmp_path / "hf"), NO_PROXY="127.0.0.1,localhost", **env)
    # The timeout only guards against a hang; the assertions are about what happened, not how long it took.
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(count_file), *args],
        capture_output=True, text=True, env=full_env, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    return proc, json.loads(count_file.read_text())["connects"]


def _assert_one_error(stderr: str) -> list[str]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert [line.split(":")[0] for line in lines] == ["Error", "Hint"], stderr
    assert not any("Retrying" in line or "thrown while requesting" in line for line in lines), stderr
    return lines


def test_refused_endpoint_one_attempt_one_error(tmp_path: Path, closed_port: int) -> None:
    port = closed_port
    proc, connects = _run_cli(
        tmp_path, ["download", "weights", "--dry-run"], HF_ENDPOINT=f"http://127.0.0.1:{port}"
    )
    assert proc.returncode == 1, proc.stderr
    error, hint = _assert_one_error(proc.stderr)
    assert f"cannot reach http://127.0.0.1:{port} (connection refused by 127.0.0.1:{port})" in error
    assert "facebook/VGGT-1B@main is not in the cache" in error
    assert "HF_HUB_OFFLINE=1" in hint and "proxy" in hint
    assert connects.count(["127.0.0.1", port]) == 1, connects  # huggingface_hub alone tried 6 times


def test_hf_hub_offline_never_connects(tmp_path: Path, closed_port: int) -> None:
    proc, connects = _run_cli(
        tmp_path,
        ["download", "weights", "--dry-run"],
        HF_HUB_OFFLINE="1",
        HF_ENDPOINT=f"http://127.0.0.1:{closed_port}",
    )
    assert proc.returncode == 1, proc.stderr
    error, _ = _assert_one_error(proc.stderr)
    assert "HF_HUB_OFFLINE is set and facebook/VGGT-1B@main is not in the cache" in error
    assert connects == []


def test_unresolvable_host_one_lookup(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, offline_dns: list[str]
) -> None:
    """A machine without DNS: one name lookup (nothing leaves the machine), then the error naming the host."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.vggtctl.invalid")
    with pytest.raises(HostUnreachableError) as e:
        fetch_weights("facebook/VGGT-1B", dry_run=True)
    assert e.value.message.startswith(
        "cannot reach https://hub.vggtctl.invalid (the host name hub.vggtctl.invalid does not resolve: "
    )
    assert "facebook/VGGT-1B@main is not in the cache" in e.value.message and "HF_ENDPOINT" in (
        e.value.hint or ""
    )
    assert offline_dns == ["hub.vggtctl.invalid"]  # huggingface_hub asked nothing: its calls were cache-only


def test_unreachable_hub_serves_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Once cached, weights load without HF_HUB_OFFLINE even when the Hub is gone, as huggingface_hub does."""
    data = b"weights" * 1000
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        commit = hub.add_repo("org/vggt", {"model.safetensors": data})
        first = fetch_weights("org/vggt")
    # The server is shut down: its port now refuses connections.
    dry = fetch_weights("org/vggt", dry_run=True)
    assert dry.cached and dry.path == first.path and dry.sha256 == hashlib.sha256(data).hexdigest()
    again = fetch_weights("org/vggt")
    assert again.path == first.path and not again.downloaded and again.commit == commit
    with pytest.raises(
        HostUnreachableError, match=r"cannot reach .*connection refused.* org/other@main is not in the cache"
    ):
        fetch_weights("org/other")
