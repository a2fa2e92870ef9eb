"""Frames split across devices (services/infer_dist.py): 2 processes on gloo equal one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vggtctl.errors import UsageError
from vggtctl.services.infer_dist import split_frames

ROOT = Path(__file__).resolve().parent.parent


def test_split_frames() -> None:
    assert split_frames(5, 2) == [(0, 3), (3, 5)]
    assert split_frames(8, 4) == [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert split_frames(3, 1) == [(0, 3)]
    with pytest.raises(UsageError, match="cannot be split across 4 devices"):
        split_frames(3, 4)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_gloo_processes_equal_one(tmp_path: Path) -> None:
    out = tmp_path / "diffs.json"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "VGGTCTL_HOME": str(tmp_path / "home"),
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(ROOT / "tests" / "scripts" / "dist_infer.py"), str(out), "5"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=220, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["world"] == 2
    assert result["missing"] == []
    for key in ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf", "extrinsic"):
        assert result["diffs"][key] <= 1e-4 * max(1.0, result["scales"][key]), (key, result)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_infer_cli_through_the_launcher_on_two_processes(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from vggtctl import load_model
    from vggtctl.data.preprocess import load_images
    from vggtctl.services.infer import predict

    images = tmp_path / "im"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (84, 112, 3), dtype=np.uint8)).save(images / f"f{i}.png")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VGGTCTL_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "vggtctl", "infer", str(images), "--model", "tiny", "--dtype", "fp32",
           "--device", "cpu", "--nproc-per-node", "2", "--out", str(tmp_path / "out"), "--format", "npz"]  # fmt: skip
    proc = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=560, check=False, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["resolved"]["ranks"] == 2
    x, _ = load_images(sorted(images.iterdir()), "crop", 168)
    os.environ.setdefault("VGGTCTL_HOME", str(tmp_path / "home"))
    ref = predict(load_model("tiny"), x)
    with np.load(tmp_path / "out" / "predictions.npz") as z:
        np.testing.assert_allclose(z["depth"], ref["depth"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(z["pose_enc"], ref["pose_enc"], rtol=1e-4, atol=1e-5)
