"""`vggtctl evaluate` through the CLI: exit codes, --json, error text, and the tiny model end to end."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.test_evaluate import truth_predictions
from vggtctl.cli.app import app
from vggtctl.runtime import resolve_dtype

runner = CliRunner()


def invoke(*args: str) -> Any:
    return runner.invoke(app, ["evaluate", *args])


def all_finite(obj: Any) -> bool:
    if isinstance(obj, dict):
        return all(all_finite(v) for v in obj.values())
    if isinstance(obj, list):
        return all(all_finite(v) for v in obj)
    return not isinstance(obj, float) or math.isfinite(obj)


def test_help_lists_options_and_examples() -> None:
    res = invoke("--help")
    assert res.exit_code == 0
    for text in ("--depth-align", "--pc-reference", "--save-vis", "Examples", "vggtctl evaluate --model"):
        assert text in res.output


def test_usage_errors_exit_2_with_all_problems(tmp_path: Path) -> None:
    res = invoke("--data", str(tmp_path), "--model", "tiny", "--predictions", str(tmp_path), "--frames", "1")
    assert res.exit_code == 2
    assert "Error: invalid evaluate settings" in res.output
    assert "--model and --predictions: give one, not both" in res.output and "--frames 1" in res.output
    assert "Hint:" in res.output
    bad = invoke("--data", str(tmp_path), "--depth-align", "median,mean")
    assert bad.exit_code == 2 and "--depth-align mean (use " in bad.output


def test_all_bad_values_in_one_error_with_flag_names(tmp_path: Path) -> None:
    # Both problems in one line (the CLI used to stop at the first, in its own format).
    res = invoke(
        "--data", str(tmp_path), "--voxel-size", "-1", "--pc-max-points", "-5", "--icp-threshold", "nan"
    )
    assert res.exit_code == 2 and res.stdout == ""
    first, hint = res.stderr.strip().splitlines()
    assert first == (
        "Error: invalid evaluate settings: --voxel-size -1 (must be >= 0); --icp-threshold nan (must be > 0); "
        "--pc-max-points -5 (at least 1000, or all points)"
    )
    assert hint.startswith("Hint: see `vggtctl evaluate --help`")


def test_config_errors_name_fields_for_python_users() -> None:
    from vggtctl.errors import ConfigError
    from vggtctl.services.evaluate import EvalConfig

    with pytest.raises(ConfigError) as e:
        EvalConfig(voxel_size=-1, pc_max_points=-5, device="gpu").validate()
    assert str(e.value) == (
        "invalid evaluate settings: voxel_size=-1 (must be >= 0); pc_max_points=-5 (at least 1000, or all points); "
        "device='gpu' (not a device (use auto, cpu, cuda, cuda:N))"
    )
    assert "--" not in str(e.value)


def test_out_is_checked_before_any_work(tmp_path: Path) -> None:
    # No data folder at all: the path problems come first, before scenes are looked for.
    report = tmp_path / "report.json"
    report.write_text("{}")
    res = invoke("--data", str(tmp_path / "nope"), "--model", "tiny", "--out", str(tmp_path))
    assert res.exit_code == 2 and f"--out {tmp_path} (a folder; give a file name)" in res.stderr
    res = invoke("--data", str(tmp_path / "nope"), "--model", "tiny", "--out", str(report))
    assert res.exit_code == 2
    assert f"--out {report} (exists already; set --overwrite to replace it)" in res.stderr
    assert report.read_text() == "{}"
    res = invoke("--data", str(tmp_path / "nope"), "--model", "tiny", "--out", str(report), "--overwrite")
    assert res.exit_code == 1 and "does not exist" in res.stderr  # past the checks: the missing data
    res = invoke("--data", str(tmp_path / "nope"), "--save-vis", str(report))
    assert res.exit_code == 2 and f"--save-vis {report} (an existing file, not a folder)" in res.stderr


def test_missing_data_folder_is_a_clear_runtime_error(tmp_path: Path) -> None:
    res = invoke("--data", str(tmp_path / "nope"), "--model", "tiny")
    assert res.exit_code == 1
    assert f"Error: ETH3D folder {tmp_path / 'nope'} does not exist" in res.output
    assert "Hint: vggtctl download eth3d" in res.output


def test_saved_predictions_json_and_table(synthetic_root: Path, tmp_path: Path) -> None:
    pred = truth_predictions(synthetic_root / "synth_001", tmp_path / "pred")
    res = invoke(
        "--data", str(synthetic_root), "--predictions", str(pred), "--pc-reference", "depth", "--json"
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["scenes"][0]["name"] == "synth_001"
    assert report["mean"]["camera"]["auc@30"] == pytest.approx(100.0)
    assert report["mean"]["depth"]["median"]["abs_rel"] == pytest.approx(0, abs=1e-7)
    assert report["settings"]["protocol"]["auc"].startswith("AUC@30 = mean over t = 1..30°")
    table = invoke("--data", str(synthetic_root), "--predictions", str(pred), "--pc-reference", "depth")
    assert table.exit_code == 0
    for text in (
        "Depth (median alignment",
        "Depth (scene-median alignment",
        "Cameras",
        "Point cloud",
        "mean (1)",
    ):
        assert text in table.stdout
    assert "100.0" in table.stdout


def test_predictions_of_another_scene_exit_1(synthetic_root: Path, tmp_path: Path) -> None:
    pred = truth_predictions(synthetic_root / "synth_001", tmp_path / "pred")
    res = invoke("--data", str(synthetic_root), "--predictions", str(pred), "--scenes", "synth_000")
    assert res.exit_code == 1
    assert "not an image of scene synth_000" in res.output and "Hint:" in res.output


def test_image_missing_from_calibration_fails_before_loading_the_model(
    synthetic_root: Path, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    shutil.copytree(synthetic_root / "synth_000", root / "synth_000")
    images = root / "synth_000" / "images" / "dslr_images_undistorted"
    (images / "DSC_0001.JPG").rename(images / "DSC_9999.JPG")
    res = invoke("--data", str(root), "--model", "does/not-exist-offline", "--json")
    assert res.exit_code == 1
    assert "images.txt lists dslr_images_undistorted/DSC_0001.JPG but" in res.output
    assert res.stdout == ""  # nothing on stdout for a failed --json run


@pytest.mark.slow
def test_tiny_model_end_to_end(synthetic_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    vis = tmp_path / "vis"
    res = invoke(
        "--data", str(synthetic_root), "--scenes", "synth_000", "--model", "tiny", "--frames", "3",
        "--image-size", "168", "--device", "cpu", "--out", str(out), "--save-vis", str(vis), "--json",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert json.loads(out.read_text()) == report
    assert all_finite(report)
    assert report["provenance"]["preset"] == "tiny"
    assert (
        report["settings"]["resolved_device"] == "cpu"
        and report["settings"]["resolved_dtype"] == resolve_dtype("auto", "cpu").name
        and report["settings"]["resolved_dtype_reason"].startswith("CPU bf16 ")
    )
    scene = report["scenes"][0]
    assert scene["frames"] == [f"dslr_images_undistorted/DSC_000{i}.JPG" for i in range(3)]
    assert set(scene["depth"]) == {"median", "scene-median"}
    assert 0 <= scene["depth"]["median"]["metrics"]["delta1"] <= 1
    assert scene["depth"]["median"]["valid_pixels"] > 0
    assert scene["camera"] is not None and scene["camera"]["pairs"] == 3
    pc = scene["pointcloud"]
    assert pc is not None and pc["tolerances"] == [0.01, 0.02, 0.05, 0.1, 0.2, 0.5]
    assert all(0 <= v <= 1 for k in ("completeness", "accuracy", "f1") for v in pc[k])
    assert pc["completeness"][-1] > 0  # a tiny random model still lands points within 50 cm
    pngs = sorted(p.name for p in (vis / "synth_000").glob("*.png"))
    assert pngs == [f"depth_DSC_000{i}_median.png" for i in range(3)]
    assert (vis / "synth_000" / "pointcloud_error.ply").is_file()
    assert {"numpy", "scipy", "numba", "torch", "vggtctl"} <= set(report["versions"])
