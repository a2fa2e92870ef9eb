"""The scripts in examples/ run and print what they promise (tiny model, synthetic scenes, CPU).

``examples/demo.sh`` (every workflow, minutes) is left to ``make demo`` and to the flag checks of
tests/test_docs_references.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.procs import ROOT, child_env

EXAMPLES = ROOT / "examples"


def _run(script: str, *args: object, cwd: Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *map(str, args)],
        cwd=cwd,
        env=child_env(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1"),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_data_layer_loads_a_sample_and_batches(tmp_path: Path) -> None:
    out = _run("data_layer.py", tmp_path / "scenes", cwd=tmp_path)
    assert "synth_000 ['dslr_images_undistorted/DSC_0002.JPG', 'dslr_images_undistorted/DSC_0000.JPG'" in out
    assert "images (3, 3, 154, 224) depth (3, 154, 224)" in out
    assert re.search(
        r"^1 \['synth_00\d', 'synth_00\d'\] .* \(2, 3, 3, 154, 224\) \(2, 3, 154, 224\)$", out, re.M
    )


@pytest.mark.slow
def test_noisy_scan_cloud_writes_a_thinned_copy_of_the_scans(tmp_path: Path) -> None:
    from vggtctl.data.eth3d import read_scans
    from vggtctl.io.ply import read_ply
    from vggtctl.services.synthetic import generate_scenes

    generate_scenes(tmp_path / "eth3d", scenes=1, views=4, seed=0, archives=False)
    out = _run("noisy_scan_cloud.py", "eth3d", "synth_000", "noisy.ply", "--keep", "0.5", cwd=tmp_path)
    scan = sum(len(s.points) for s in read_scans(tmp_path / "eth3d" / "synth_000"))
    points = read_ply(tmp_path / "noisy.ply")["xyz"]
    assert out.strip() == f"{len(points)} points -> noisy.ply"
    assert 0.4 * scan < len(points) < 0.6 * scan and np.isfinite(points).all()


@pytest.mark.slow
def test_bundle_adjust_synthetic_recovers_the_cameras(tmp_path: Path) -> None:
    pytest.importorskip("pycolmap")
    out = _run("bundle_adjust_synthetic.py", tmp_path / "ba", cwd=tmp_path)
    before, after = map(
        float, re.search(r"reprojection error ([\d.e+-]+) px -> ([\d.e+-]+) px", out).groups()
    )
    assert after < 1e-3 < 1 < before
    assert (tmp_path / "ba" / "refined").is_dir() and (tmp_path / "ba" / "start").is_dir()


@pytest.mark.slow
def test_vln_cache_builds_verifies_and_reads_back(tmp_path: Path) -> None:
    out = _run("vln_cache.py", tmp_path / "work", cwd=tmp_path)
    assert "built 14 entries in 4 streaming passes" in out
    assert "coverage 14/14, spec streaming width 224 layer 22 bf16" in out
    assert "verify: ok=True" in out
    assert "episode_1/step_0010_stop.png: 9 frames -> features (192, 128) torch.bfloat16" in out
    assert "reader: {'hits': 1, 'misses': 0, 'hit_rate': 1.0}" in out


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_train_vln_tiny_runs_end_to_end_into_an_absolute_out(tmp_path: Path) -> None:
    # Its header shows OUT=/tmp/v: the fake home must land there, not under the checkout (ROOT//tmp/v/home).
    out = tmp_path / "v"
    proc = subprocess.run(
        ["bash", str(EXAMPLES / "train_vln_tiny.sh")],
        env=child_env(OUT=str(out), PYTHON=sys.executable, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1"),
        capture_output=True,
        text=True,
        timeout=380,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "home" / "weights" / "tiny" / "model.safetensors").is_file()
    last = json.loads((out / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 6 and last["cache_hit_ratio"] == 1.0
    assert re.search(r"^scores \(log-probability\): MOVE_FORWARD=", proc.stdout, re.M)
