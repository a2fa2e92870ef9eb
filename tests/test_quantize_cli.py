"""`vggtctl quantize` on the command line: the guide's spellings, errors, JSON, and the artifact as --model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers_cli import run_cli


def test_help_lists_options_and_examples() -> None:
    r = run_cli("quantize", "--help")
    assert r.exit_code == 0
    for flag in (
        "--type",
        "--observer",
        "--calibration-data",
        "--rotate",
        "--quantize-heads",
        "--compare",
        "--weight-dtype",
    ):
        assert flag in r.stdout
    assert "vggtctl quantize --model tiny" in r.stdout


def test_guide_spellings_reach_the_same_validation(tmp_path: Path) -> None:
    """`--quantization_type dynamic --observer_type minmax` is the kebab-case pair's error, exit 2."""
    for args in (
        ("--type", "dynamic", "--observer", "minmax"),
        ("--quantization_type", "dynamic", "--observer_type", "minmax"),
    ):
        r = run_cli("quantize", "--model", "tiny", "--out", tmp_path / "q", *args)
        assert r.exit_code == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert lines[0].startswith("Error: invalid quantize settings: --type and --observer")
        assert lines[1].startswith("Hint: ")
    r = run_cli(
        "quantize",
        "--model",
        "tiny",
        "--out",
        tmp_path / "q",
        "--quantization_type",
        "static",
        "--calibration_samples",
        "0",
        "--quantize_attention",
        "--compare_outputs",
    )
    assert r.exit_code == 2
    assert "--calibration-samples 0 (at least 1 scene)" in r.stderr
    assert "--calibration-data" in r.stderr  # static without a folder, reported in the same line
    assert not (tmp_path / "q").exists()


def test_fp8_dynamic_on_cpu_exits_2_and_writes_nothing(tiny_checkpoint: Path, tmp_path: Path) -> None:
    r = run_cli(
        "quantize", "--model", tiny_checkpoint, "--out", tmp_path / "q", "--weight-dtype", "fp8",
        "--device", "cpu", "--no-compare",
    )  # fmt: skip
    assert r.exit_code == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("Error: fp8 dynamic quantization") and "compute capability" in lines[0]
    assert lines[1].startswith("Hint: ") and "--type weight-only --weight-dtype fp8" in lines[1]
    assert not (tmp_path / "q").exists()


def test_bad_choice_is_a_usage_error(tmp_path: Path) -> None:
    r = run_cli("quantize", "--type", "fp3", "--out", tmp_path / "q")
    assert r.exit_code == 2 and r.stderr.startswith("Error: ")


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_quantize_json_then_infer_with_the_artifact(
    tiny_checkpoint: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    r = run_cli(
        "quantize",
        "--model",
        tiny_checkpoint,
        "--out",
        tmp_path / "q",
        "--type",
        "static",
        "--observer",
        "histogram",
        "--calibration-data",
        synthetic_root,
        "--calibration-samples",
        "1",
        "--calibration-frames",
        "2",
        "--rotate",
        "hadamard",
        "--no-compare",
        "--device",
        "cpu",
        "--json",
    )
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["method"] == "static" and doc["observer"] == "histogram" and doc["rotation"] == "hadamard"
    assert doc["layers"]["int8-static"] > 0 and doc["report"] is None
    images = synthetic_root / "synth_000" / "images" / "dslr_images_undistorted"
    r = run_cli(
        "infer", images, "--model", tmp_path / "q", "--out", tmp_path / "run", "--format", "npz", "--json"
    )
    assert r.exit_code == 0, r.stderr
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    prov = meta["provenance"]
    assert prov["format"] == "quantized"
    assert prov["quantization"]["method"] == "static" and len(prov["quantization"]["config_sha256"]) == 64
    assert prov["base"]["preset"] == "tiny" and len(prov["base"]["sha256"]) == 64
    # Quantizing the artifact again is refused, and nothing is written.
    r = run_cli("quantize", "--model", tmp_path / "q", "--out", tmp_path / "q2", "--no-compare")
    assert r.exit_code == 2 and "already a quantized artifact" in r.stderr
    assert not (tmp_path / "q2").exists()
