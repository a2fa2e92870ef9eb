"""`vggtctl cache build` end to end: CLI output, a kill and resume, disk full, 2 processes == 1."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers_cli import run_cli
from tests.helpers_vln import WIDTH, write_data_file, write_episode
from tests.procs import ROOT, child_env, spawn
from vggtctl.services.vlncache.build import BuildConfig, build_cache
from vggtctl.services.vlncache.entries import decode_entry
from vggtctl.services.vlncache.layout import CacheDir

COMMON = ("--model", "tiny", "--image-width", WIDTH, "--device", "cpu")


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight episodes of 3 frames: 24 samples in 8 streaming passes."""
    root = tmp_path_factory.mktemp("vlnc")
    episodes = {f"ep{k}": write_episode(root / "images" / f"ep{k}", 3, seed=20 + k) for k in range(8)}
    return write_data_file(root / "train.jsonl", episodes, jsonl=True)


@pytest.fixture(scope="module")
def reference(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean single-process build to compare against."""
    cache_dir = tmp_path_factory.mktemp("ref") / "cache"
    build_cache(BuildConfig(data=data, cache_dir=cache_dir, model="tiny", image_width=WIDTH, device="cpu"))
    return cache_dir


def values(cache_dir: Path) -> dict[str, tuple[str, torch.Tensor]]:
    cache = CacheDir(cache_dir)
    return {sid: (r.key, decode_entry(cache.entry_path(r.key))[0]) for (_, sid), r in cache.rows().items()}


def assert_same_cache(a: Path, b: Path) -> None:
    va, vb = values(a), values(b)
    assert sorted(va) == sorted(vb)
    for sid, (key, value) in va.items():
        assert vb[sid][0] == key
        assert torch.allclose(value.float(), vb[sid][1].float(), rtol=0, atol=1e-6), sid


def test_build_cli_dry_run_json_then_build_and_skip(data: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    ran = run_cli("cache", "build", "--data", data, "--cache-dir", cache_dir, *COMMON, "--dry-run", "--json")
    assert ran.exit_code == 0, ran.stderr
    doc = json.loads(ran.stdout)
    assert doc["samples"] == 24 and doc["estimated_bytes"] > 0 and doc["free_bytes"] > 0
    assert doc["launch"]["backend"] == "inprocess" and not cache_dir.exists()
    ran = run_cli("cache", "build", "--data", data, "--cache-dir", cache_dir, *COMMON, "--max-samples", "6")
    assert ran.exit_code == 0, ran.stderr
    assert "6 entries written" in ran.stdout and "spec: tiny" in ran.stdout
    ran = run_cli(
        "cache", "build", "--data", data, "--cache-dir", cache_dir, *COMMON, "--max-samples", "6", "--json"
    )
    assert json.loads(ran.stdout)["already_cached"] == 6
    bad = run_cli("cache", "build", "--data", data, "--cache-dir", cache_dir, *COMMON, "--image-width", "600")
    assert bad.exit_code == 2 and "--image-width 600" in bad.stderr and "Hint:" in bad.stderr


@pytest.mark.slow
def test_a_killed_build_resumes_where_it_stopped(data: Path, reference: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    cmd = [
        sys.executable,
        "-m",
        "vggtctl",
        "cache",
        "build",
        "--data",
        str(data),
        "--cache-dir",
        str(cache_dir),
    ]
    cmd += [str(a) for a in COMMON]
    with spawn(cmd, cwd=ROOT, env=child_env(OMP_NUM_THREADS="1")) as proc:
        deadline = time.monotonic() + 240
        shards = cache_dir / "shards"
        while time.monotonic() < deadline and proc.poll() is None:
            lines = (
                sum(len(p.read_text().splitlines()) for p in shards.glob("*.jsonl")) if shards.is_dir() else 0
            )
            if lines >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the build finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done_before = len(CacheDir(cache_dir).rows())
    assert 3 <= done_before < 24
    resumed = build_cache(
        BuildConfig(data=data, cache_dir=cache_dir, model="tiny", image_width=WIDTH, device="cpu")
    )
    assert resumed.already_cached == done_before and resumed.computed == 24 - done_before
    assert not list((cache_dir / "shards").glob("*.jsonl"))
    assert not list(cache_dir.rglob("*.tmp"))
    assert_same_cache(cache_dir, reference)


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))


@pytest.mark.slow
def test_disk_full_mid_write_leaves_no_partial_entry(data: Path, tmp_path: Path) -> None:
    import vggtctl

    vggtctl.load_model("tiny")  # the weights exist before the child runs with a 3000-byte file limit
    cache_dir = tmp_path / "cache"
    cmd = [
        sys.executable,
        "-m",
        "vggtctl",
        "cache",
        "build",
        "--data",
        str(data),
        "--cache-dir",
        str(cache_dir),
    ]
    env = child_env(OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [*cmd, *map(str, COMMON)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limit_file_size,  # noqa: PLW1509
    )
    assert proc.returncode == 1, proc.stderr
    assert "Error: disk full while writing" in proc.stderr and "no partial entry" in proc.stderr
    assert [p for p in (cache_dir / "entries").rglob("*") if p.is_file()] == []
    assert CacheDir(cache_dir).rows() == {}


@pytest.mark.slow
def test_two_process_torchrun_build_equals_one_process(data: Path, reference: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    ran = run_cli(
        "cache",
        "build",
        "--data",
        data,
        "--cache-dir",
        cache_dir,
        *COMMON,
        "--nproc-per-node",
        "2",
        "--json",
        env=env,
    )
    assert ran.exit_code == 0, ran.stderr
    doc = json.loads(ran.stdout)
    assert doc["world_size"] == 2 and doc["computed"] == 24 and doc["passes"] == 8
    logs = list((cache_dir / "logs").glob("*/rank1.log"))
    assert len(logs) == 1  # rank 1 ran under torchrun and kept its own log
    assert_same_cache(cache_dir, reference)
