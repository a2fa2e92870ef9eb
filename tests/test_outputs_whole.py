"""A run's output appears whole or not at all, and readers refuse folders that are not whole.

Interrupts are real: a child process sends itself SIGINT when a chosen function is first called
(tests/scripts/interrupt_at.py), so Ctrl-C lands at a known moment of the real CLI.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.procs import run_interrupted
from vggtctl.cli.app import app
from vggtctl.errors import InputError
from vggtctl.io.predictions import check_complete, load_predictions
from vggtctl.utils.atomic import StagedDir, staging_siblings

runner = CliRunner()


def _images(folder: Path, n: int, seed: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (126, 168, 3), dtype=np.uint8)).save(folder / f"f{i}.png")
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _infer(images: Path, out: Path, model: Path, *extra: str) -> Any:
    r = runner.invoke(app, ["infer", str(images), "--model", str(model), "--out", str(out), "--json", *extra])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def four(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> dict[str, Path]:
    """A finished 4-frame run, and 6 other images to run over it."""
    base = tmp_path_factory.mktemp("whole")
    out = base / "out4"
    _infer(_images(base / "four", 4), out, tiny_checkpoint)
    return {"out": out, "six": _images(base / "six", 6, seed=4)}


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_interrupted_infer_leaves_the_previous_output_untouched(
    four: dict[str, Path], tmp_path: Path, tiny_checkpoint: Path
) -> None:
    out = _copy(four["out"], tmp_path / "out")
    before = _snapshot(out)
    # Ctrl-C after predictions.npz of the 6-frame run was written, before points.ply: the old code left
    # a 6-frame npz beside the 4-frame meta.json and colmap/.
    r = run_interrupted(
        "vggtctl.io.ply:write_ply", "infer", four["six"], "--model", tiny_checkpoint, "--out", out
    )
    assert r.returncode == 130, r.stderr
    assert "Error: interrupted" in r.stderr
    assert "Hint: nothing was written: the --out folder is as it was before" in r.stderr
    assert "resume" not in r.stderr  # infer cannot resume
    assert _snapshot(out) == before
    assert staging_siblings(out) == []
    assert len(load_predictions(out)["source_files"]) == 4


def test_interrupted_infer_in_a_fresh_folder_leaves_nothing(tmp_path: Path, tiny_checkpoint: Path) -> None:
    images = _images(tmp_path / "img", 2)
    out = tmp_path / "new" / "deeper" / "out"
    r = run_interrupted("vggtctl.io.ply:write_ply", "infer", images, "--model", tiny_checkpoint, "--out", out)
    assert r.returncode == 130, r.stderr
    assert not (tmp_path / "new").exists()  # not even the parents it would have created
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img"]


def test_a_new_run_replaces_the_previous_one_as_a_whole(
    four: dict[str, Path], tmp_path: Path, tiny_checkpoint: Path
) -> None:
    out = _copy(four["out"], tmp_path / "out")
    (out / "notes.txt").write_text("mine")  # not infer's: stays
    res = _infer(four["six"], out, tiny_checkpoint, "--format", "npz")
    assert res["frames"] == 6
    names = sorted(p.name for p in out.iterdir())
    assert names == ["meta.json", "notes.txt", "predictions.npz"]  # no 4-frame points.ply or colmap/
    meta = json.loads((out / "meta.json").read_text())
    assert len(meta["frames"]) == 6 and set(meta["outputs"]) == {"predictions.npz"}
    assert meta["files"]["npz"] == str(out / "predictions.npz")  # the final path, not the staging one
    assert len(load_predictions(out)["source_files"]) == 6


def test_readers_refuse_an_infer_folder_without_its_meta(four: dict[str, Path], tmp_path: Path) -> None:
    # What an interrupted run of the old code left in a fresh folder: predictions.npz + points.ply.
    out = _copy(four["out"], tmp_path / "half")
    (out / "meta.json").unlink()
    shutil.rmtree(out / "colmap")
    with pytest.raises(
        InputError, match=r"incomplete vggtctl infer output: it has points.ply but no meta.json"
    ):
        load_predictions(out)
    with pytest.raises(InputError, match="incomplete"):
        load_predictions(out / "predictions.npz")  # the file itself: its folder is checked too


def test_readers_refuse_a_mix_of_two_runs(
    four: dict[str, Path], tmp_path: Path, tiny_checkpoint: Path
) -> None:
    other = tmp_path / "six"
    _infer(four["six"], other, tiny_checkpoint, "--format", "npz")
    out = _copy(four["out"], tmp_path / "mixed")
    shutil.copy(other / "predictions.npz", out / "predictions.npz")  # new npz beside the old meta.json
    with pytest.raises(InputError, match=r"predictions.npz has \d+ bytes, not the \d+ recorded in meta.json"):
        check_complete(out)
    # A meta.json of an older vggtctl lists no sizes: the frame count still gives the mix away.
    meta = json.loads((out / "meta.json").read_text())
    del meta["outputs"]
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="holds 6 frames but .*meta.json describes 4"):
        load_predictions(out)


def test_a_staging_folder_is_refused_and_skipped(four: dict[str, Path], tmp_path: Path) -> None:
    staging = _copy(four["out"], tmp_path / ".out.4242.tmp")
    with pytest.raises(InputError, match="staging folder of a vggtctl infer run") as e:
        load_predictions(staging)
    assert e.value.hint is not None and str(tmp_path / "out") in e.value.hint


def test_library_predictions_folder_is_complete(tmp_path: Path) -> None:
    from vggtctl.data.preprocess import ImageGeometry
    from vggtctl.io.predictions import save_predictions

    geoms = [ImageGeometry((14, 14), (14, 14), (0, 0), (14, 14))]
    save_predictions(tmp_path, {"extrinsic": np.zeros((1, 3, 4), np.float32)}, geoms, ["a.png"])
    assert check_complete(tmp_path) is None  # save_predictions alone is atomic: nothing to mix
    assert load_predictions(tmp_path)["extrinsic"].shape == (1, 3, 4)


def test_evaluate_refuses_an_incomplete_infer_folder(
    four: dict[str, Path], tmp_path: Path, synthetic_root: Path
) -> None:
    out = _copy(four["out"], tmp_path / "half")
    (out / "meta.json").unlink()
    r = runner.invoke(app, ["evaluate", "--data", str(synthetic_root), "--predictions", str(out)])
    assert r.exit_code == 1, r.output
    assert "Error: " in r.output and "incomplete vggtctl infer output" in r.output
    assert "Hint: re-run `vggtctl infer IMAGES --out DIR`" in r.output


def test_staged_dir_keeps_the_old_content_on_failure_and_swaps_on_success(tmp_path: Path) -> None:
    final = tmp_path / "f"
    final.mkdir()
    (final / "marker").write_text("old")
    (final / "old_only").write_text("x")
    with pytest.raises(RuntimeError), StagedDir(final, marker="marker") as work:
        (work / "marker").write_text("new")
        raise RuntimeError("boom")
    assert _snapshot(final) == {"marker": b"old", "old_only": b"x"} and staging_siblings(final) == []
    with StagedDir(final, marker="marker", replace=["old_only"]) as work:
        (work / "marker").write_text("new")
        (work / "sub").mkdir()
        (work / "sub" / "a").write_text("a")
    assert _snapshot(final) == {"marker": b"new", "sub/a": b"a"} and staging_siblings(final) == []


def test_staging_left_by_a_killed_process_is_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".f.{dead.pid}.tmp"
    stale.mkdir()
    (stale / "junk").write_text("x")
    with StagedDir(tmp_path / "f", marker="m") as work:
        (work / "m").write_text("done")
    assert not stale.exists() and (tmp_path / "f" / "m").read_text() == "done"
