"""`vggtctl env`: versions, secrets hidden, cache paths, and no crash when a package is broken."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vggtctl.cli.app import app
from vggtctl.services.env_report import NOT_INSTALLED, package_version

runner = CliRunner()


def _metadata_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return NOT_INSTALLED


def test_env_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch

    monkeypatch.setenv("HF_TOKEN", "hf_supersecret_value")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    snap = tmp_path / "hf" / "hub" / "models--facebook--VGGT-1B" / "snapshots" / "0123456789abcdef"
    snap.mkdir(parents=True)
    (snap / "model.safetensors").write_bytes(b"x")
    r = runner.invoke(app, ["env", "--json"])
    assert r.exit_code == 0, r.stderr
    assert "hf_supersecret_value" not in r.stdout
    d = json.loads(r.stdout)
    assert (
        d["env"]["HF_TOKEN"] == "set"
        and d["env"]["HF_HUB_OFFLINE"] == "1"
        and d["env"]["HF_ENDPOINT"] is None
    )
    assert d["packages"]["torch"] == torch.__version__
    for label, dist in (("deepspeed", "deepspeed"), ("peft", "peft"), ("transformers", "transformers")):
        assert d["packages"][label] == _metadata_version(dist)
    assert (
        d["cuda"]["available"] == torch.cuda.is_available() and d["cuda"]["torch_cuda"] == torch.version.cuda
    )
    assert d["paths"]["hf_hub_cache"] == str(tmp_path / "hf" / "hub")
    assert d["paths"]["vggtctl_home"] == os.environ["VGGTCTL_HOME"]
    assert "facebook/VGGT-1B@0123456789ab/model.safetensors" in d["cached_weights"]


def test_env_table_hides_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_supersecret_value")
    r = runner.invoke(app, ["env"])
    assert r.exit_code == 0
    assert "hf_supersecret_value" not in r.stdout and "HF_TOKEN" in r.stdout and "huggingface_hub" in r.stdout


def test_package_version_of_missing_package() -> None:
    assert package_version("surely-not-an-installed-distribution") == NOT_INSTALLED


def test_env_survives_a_broken_torch(tmp_path: Path) -> None:
    fake = tmp_path / "shadow" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('this torch is broken')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "shadow")}
    proc = subprocess.run(
        [sys.executable, "-m", "vggtctl", "env", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert "this torch is broken" in d["cuda"]["error"] and d["cuda"]["available"] is False


def test_env_reports_cpu_bf16_support_and_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    r = runner.invoke(app, ["env", "--json"])
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["dist"] == {"rank": 3, "local_rank": 1, "world_size": 4}
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").is_file() else set()
    if flags:
        native = sorted(flags & {"amx_bf16", "avx512_bf16", "bf16"})
        cpu = d["cpu"]
        assert cpu["bf16_native"] is bool(native) and sorted(cpu["bf16_flags"]) == native
        assert cpu["auto_dtype"] == ("bf16" if native else "fp32")
        assert cpu["bf16"].startswith("native (" if native else "emulated")
    table = runner.invoke(app, ["env"])
    assert table.exit_code == 0 and "bf16" in table.stdout and "auto_dtype" in table.stdout
