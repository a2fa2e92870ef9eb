"""`vggtctl infer` at scale through the CLI: the memory plan (--dry-run, --max-memory, --chunk), a chunked
run's report, and video input (--every / --fps, timestamps, a video without frames)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.helpers_cli import run_cli
from vggtctl.io.video import iter_video_images, select_video_frames


def _images(folder: Path, n: int, size: tuple[int, int] = (112, 84)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (size[1] + n, size[0] + n, 3), dtype=np.uint8)
    for i in range(n):  # overlapping crops of one picture: neighbouring frames share content
        Image.fromarray(base[i : i + size[1], i : i + size[0]]).save(folder / f"f{i:02d}.png")
    return folder


def _video(path: Path, frames: int, fps: float = 30.0, size: tuple[int, int] = (96, 64)) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        img = np.full((size[1], size[0], 3), (i * 9) % 256, dtype=np.uint8)
        img[:, : 4 + i] = 255  # a bar that grows: frame i is recognisable after decoding
        writer.write(img)
    writer.release()
    return path


def _json(r: Any) -> dict[str, Any]:
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


def test_dry_run_prints_the_decision_with_numbers(tmp_path: Path) -> None:
    images = _images(tmp_path / "im", 10)
    r = run_cli("infer", images, "--model", "tiny", "--dtype", "fp32", "--dry-run")
    assert r.exit_code == 0, r.stderr
    assert "plan: 10 frames at 168x126, tiny, float32 on cpu" in r.stdout
    assert "-> one pass (fits in 90% of the budget)" in r.stdout
    assert not (tmp_path / "vggt_out").exists()
    plan = _json(run_cli("infer", images, "--model", "tiny", "--dtype", "fp32", "--dry-run", "--json"))
    one = plan["one_pass_bytes"]
    # A budget between the chunk and the one-pass need forces chunks; the numbers are the plan's own.
    budget = int(one / 0.9) - 2**20
    small = _json(
        run_cli(
            "infer",
            images,
            "--model",
            "tiny",
            "--dtype",
            "fp32",
            "--dry-run",
            "--json",
            "--max-memory",
            f"{budget}B",
        )  # fmt: skip
    )
    assert small["mode"] == "chunked" and small["budget_bytes"] == budget
    assert small["chunk_bytes"] <= 0.9 * budget < small["one_pass_bytes"]
    assert small["chunks"][0][0] == 0 and small["chunks"][-1][1] == 10
    r = run_cli("infer", images, "--model", "tiny", "--dtype", "fp32", "--dry-run", "--chunk", "off",
                "--max-memory", f"{budget}B")  # fmt: skip
    assert r.exit_code == 1
    gib = one / 2**30
    assert f"Error: one pass over 10 frames at 168x126 needs ~{one / 2**20:.0f} MiB" in r.stderr or gib >= 1
    assert "Hint: drop --chunk off" in r.stderr


def test_bad_scale_settings_exit_2_all_at_once(tmp_path: Path) -> None:
    images = _images(tmp_path / "im", 3)
    r = run_cli("infer", images, "--model", "tiny", "--chunk-size", 3, "--overlap", 5, "--max-memory", "lots",
                "--fps", "0")  # fmt: skip
    assert r.exit_code == 2
    assert "--chunk-size 3 (must be larger than the overlap (5)" in r.stderr
    assert "--max-memory lots (a size like 20GB" in r.stderr
    assert "--fps 0 (must be > 0" in r.stderr


@pytest.mark.slow
def test_chunked_run_reports_alignment_per_chunk(tmp_path: Path) -> None:
    images = _images(tmp_path / "im", 6)
    out = tmp_path / "out"
    r = run_cli("infer", images, "--model", "tiny", "--dtype", "fp32", "--out", out, "--chunk-size", 4,
                "--overlap", 2, "--format", "npz,ply", "--json")  # fmt: skip
    res = _json(r)
    assert res["plan"]["mode"] == "chunked" and res["plan"]["chunks"] == [[0, 4], [2, 6]]
    assert [c["start"] for c in res["chunks"]] == [0, 2]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["chunks"] == res["chunks"]
    for c in meta["chunks"][1:]:
        assert c["overlap_frames"] >= 2 and c["points"] > 0 and 0 <= c["residual_rel"] < 1
        assert np.isfinite(np.array(c["transform"])).all()
    with np.load(out / "predictions.npz") as z:
        assert z["depth"].shape[0] == 6 and z["extrinsic"].shape == (6, 3, 4)
        assert np.isfinite(z["world_points_from_depth"]).all()
    assert "chunk 2/2: frames 2-5, 2 shared, scale" in r.stderr


def test_video_every_and_fps_select_by_count_and_time(tmp_path: Path) -> None:
    video = _video(tmp_path / "walk.avi", 20, fps=30.0)
    every = select_video_frames(video, every=5)
    assert [f.index for f in every] == [0, 5, 10, 15]
    by_time = select_video_frames(video, fps=10.0)
    assert [f.index for f in by_time] == [0, 3, 6, 9, 12, 15, 18]
    assert [f.timestamp_s for f in by_time] == pytest.approx([i / 30 for i in (0, 3, 6, 9, 12, 15, 18)])
    assert by_time[1].name == "walk_000003.png"
    # streamed decode: the frames come one at a time, and they are the right ones (bar width 4 + index)
    stream = iter_video_images(video, [3, 12])
    index, img = next(stream)
    bar = (np.asarray(img)[32, :, 0] > 200).sum()
    assert index == 3 and abs(int(bar) - 7) <= 1
    assert next(stream)[0] == 12


@pytest.mark.slow
def test_video_timestamps_kept_in_outputs(tmp_path: Path) -> None:
    video = _video(tmp_path / "walk.avi", 12, fps=24.0)
    out = tmp_path / "out"
    res = _json(run_cli("infer", video, "--model", "tiny", "--dtype", "fp32", "--out", out, "--fps", "8",
                        "--format", "npz,colmap", "--json"))  # fmt: skip
    assert res["frames"] == 4
    meta = json.loads((out / "meta.json").read_text())
    assert [f["timestamp_s"] for f in meta["frames"]] == pytest.approx([0, 3 / 24, 6 / 24, 9 / 24])
    assert [f["name"] for f in meta["frames"]][1] == "frames/walk_000003.png"
    assert (out / "frames" / "walk_000009.png").is_file()
    with np.load(out / "predictions.npz") as z:
        np.testing.assert_allclose(z["timestamps_s"], [0, 0.125, 0.25, 0.375])


def test_video_without_frames_is_a_clear_error(tmp_path: Path) -> None:
    import cv2

    empty = tmp_path / "empty.avi"
    writer = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48))
    writer.release()  # a container with no frame in it
    r = run_cli("infer", empty, "--model", "tiny")
    assert r.exit_code == 1
    assert r.stderr.startswith("Error: ") and "empty.avi" in r.stderr
    assert "no frames" in r.stderr or "0 bytes" in r.stderr or "cannot open" in r.stderr
    zero = tmp_path / "zero.mp4"
    zero.write_bytes(b"")
    r = run_cli("infer", zero, "--model", "tiny")
    assert r.exit_code == 1 and "zero.mp4 is empty (0 bytes)" in r.stderr


def test_dry_run_across_two_devices_prints_per_device_numbers(tmp_path: Path) -> None:
    from vggtctl.models.vggt.config import get_config
    from vggtctl.services.infer_plan import estimate_peak_bytes

    images = _images(tmp_path / "im", 10)
    args = ("infer", images, "--model", "tiny", "--dtype", "fp32", "--device", "cpu", "--dry-run",
            "--nproc-per-node", "2", "--max-memory", "8GB")  # fmt: skip
    r = run_cli(*args)
    assert r.exit_code == 0, r.stderr
    assert "plan: 10 frames at 168x126, tiny, float32 on cpu x 2 devices" in r.stdout
    assert "each device: <= 5 frames" in r.stdout and "frames per rank 0-4, 5-9" in r.stdout
    plan = _json(run_cli(*args, "--json"))
    assert plan["world"] == 2 and plan["frames_per_device"] == 5 and plan["mode"] == "one-pass"
    assert plan["one_pass_bytes"] == estimate_peak_bytes(get_config("tiny"), "tiny", 10, 126, 168, world=2)
    assert not (tmp_path / "vggt_out").exists()
