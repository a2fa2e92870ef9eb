"""sha256 once per job: a shared sidecar cache, computed by one process while the others wait and reuse it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vggtctl.services.hashing import cache_dir, file_sha256, folder_sha256, hash_file, path_sha256

SCRIPT = Path(__file__).parent / "scripts" / "hash_once.py"
ROOT = Path(__file__).resolve().parents[1]


def test_two_processes_hash_a_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VGGTCTL_HOME", str(tmp_path / "home"))
    data = os.urandom(48 << 20)  # ~0.1 s of hashing: long enough for both to be inside it at once unlocked
    big = tmp_path / "model.safetensors"
    big.write_bytes(data)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    go = tmp_path / "go"
    procs, ready = [], []
    for i in range(2):
        ready.append(tmp_path / f"ready{i}")
        procs.append(
            subprocess.Popen(
                [sys.executable, str(SCRIPT), str(big), str(ready[-1]), str(go)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )  # fmt: skip
        )
    try:
        deadline = time.monotonic() + 60
        while not all(r.exists() for r in ready) and time.monotonic() < deadline:
            time.sleep(0.01)
        go.write_text("go")  # both start hashing at the same moment
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    results = [json.loads(out) for out, _ in outs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    assert {r["sha256"] for r in results} == {hashlib.sha256(data).hexdigest()}
    assert sorted(r["computed"] for r in results) == [False, True]  # one computed, the other reused it
    assert hash_file(big).computed is False  # and this process reuses it too
    entries = list(cache_dir().glob("*.json"))
    assert len(entries) == 1 and json.loads(entries[0].read_text())["size"] == len(data)


def test_cache_entry_follows_size_and_mtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VGGTCTL_HOME", str(tmp_path / "home"))
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    first = hash_file(f)
    assert first.computed and first.sha256 == hashlib.sha256(b"abc").hexdigest()
    assert hash_file(f).computed is False
    f.write_bytes(b"abd")  # same size, new content and mtime
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    again = hash_file(f)
    assert again.computed and again.sha256 == hashlib.sha256(b"abd").hexdigest()


def test_folder_sha256_is_the_manifest_digest(tmp_path: Path) -> None:
    folder = tmp_path / "artifact"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.json").write_text('{"method": "int8"}')
    (folder / "sub" / "a.bin").write_bytes(b"\x00\x01")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "ignored").write_text("x")  # hidden: not part of the artifact
    manifest = "".join(
        f"{rel}\0{hashlib.sha256((folder / rel).read_bytes()).hexdigest()}\n"
        for rel in ("b.json", "sub/a.bin")
    )
    expected = hashlib.sha256(manifest.encode()).hexdigest()
    assert folder_sha256(folder) == path_sha256(folder) == expected
    (folder / ".cache" / "ignored").write_text("changed")
    assert folder_sha256(folder) == expected
    (folder / "sub" / "a.bin").write_bytes(b"\x00\x02")
    assert folder_sha256(folder) != expected
    assert path_sha256(folder / "b.json") == file_sha256(folder / "b.json")
