"""Usage errors look the same whoever raises them, and cheap checks run before expensive work.

Everything here goes through ``vggtctl.cli.app.run`` (what the ``vggtctl`` script runs), so Typer's
own usage errors are seen as users see them; one test runs the real script in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers_cli import run_cli


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(path)
    return path


def _two_lines(stderr: str) -> tuple[str, str]:
    lines = stderr.strip().splitlines()
    assert len(lines) == 2, stderr
    assert lines[0].startswith("Error: ") and lines[1].startswith("Hint: "), stderr
    return lines[0], lines[1]


# ---------------------------------------------------------------- one look for all usage errors


@pytest.mark.parametrize(
    ("args", "error", "command"),
    [
        (["download", "eth3d", "--synthetic", "--views", "0"], "'--views'", "vggtctl download eth3d"),
        (["download", "eth3d", "--jobs", "0"], "'--jobs'", "vggtctl download eth3d"),
        (["infer", "x.jpg", "--mode", "foo"], "'foo' is not one of 'crop', 'pad'", "vggtctl infer"),
        (["env", "--foo"], "No such option: --foo", "vggtctl env"),
        (["evaluate", "--format", "json"], "No such option: --format", "vggtctl evaluate"),
        (
            ["infer", "x.jpg", "--device", "gpu"],
            "'gpu' is not a device (use auto, cpu, cuda, cuda:N)",
            "vggtctl infer",
        ),
        (["evaluate", "--device", "cuda:x"], "'cuda:x' is not a device", "vggtctl evaluate"),
        (["frobnicate"], "No such command 'frobnicate'", "vggtctl"),
    ],
)
def test_typer_usage_errors_are_error_and_hint(args: list[str], error: str, command: str) -> None:
    r = run_cli(*args)
    assert r.exit_code == 2 and r.stdout == ""
    first, hint = _two_lines(r.stderr)
    assert error in first
    assert hint == f"Hint: see `{command} --help` for the options and their values"
    assert "╭" not in r.stderr and "Usage:" not in r.stderr


def test_the_installed_script_prints_the_same_pair() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "vggtctl", "download", "eth3d", "--synthetic", "--views", "0"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "Error: Invalid value for '--views': Input should be greater than or equal to 1",
        "Hint: see `vggtctl download eth3d --help` for the options and their values",
    ]


def test_device_cuda_n_is_accepted_by_infer_and_evaluate_alike(tmp_path: Path) -> None:
    # Both commands get past option parsing with cuda:1; on this CPU-only machine torch then says so.
    img = _image(tmp_path / "a.png")
    r = run_cli("infer", img, "--device", "cuda:1", "--model", "tiny", "--out", tmp_path / "o")
    assert "Invalid value" not in r.stderr
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if not has_cuda:
        assert r.exit_code == 2 and "device 'cuda:1' asked for, but torch" in r.stderr
    r = run_cli("evaluate", "--device", "cuda:1", "--data", tmp_path / "nope", "--model", "tiny")
    assert r.exit_code == 1 and "does not exist" in r.stderr  # past the device check, at the data


def test_scenes_take_the_same_form_everywhere(tmp_path: Path) -> None:
    # Repeated or comma-separated, for download and evaluate alike.
    r = run_cli("download", "eth3d", "--scenes", "courtyard", "--scenes", "facade,nope", "--dry-run")
    assert r.exit_code == 2 and "unknown ETH3D training scene 'nope'" in r.stderr
    r = run_cli("evaluate", "--data", tmp_path, "--scenes", "a", "--scenes", "b,c", "--model", "tiny")
    assert r.exit_code == 1 and "scene(s) a, b, c not found" in r.stderr


# ---------------------------------------------------------------- bad values, all at once


def test_synthetic_seed_and_views_are_usage_errors_and_leave_no_folder(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    r = run_cli("download", "eth3d", "--synthetic", "--scenes", "0", "--seed", "-5", "--out", out)
    assert r.exit_code == 2
    first, _ = _two_lines(r.stderr)
    assert first == (
        "Error: invalid synthetic download settings: --scenes 0 (at least 1 scene); "
        "--seed -5 (a seed is a non-negative integer)"
    )
    assert not out.exists()


def test_conf_threshold_nan_is_refused_before_anything_runs(tmp_path: Path) -> None:
    img = _image(tmp_path / "a.png")
    for bad in ("nan", "inf", "nan%", "120%"):
        r = run_cli("infer", img, "--model", "tiny", "--conf-threshold", bad, "--out", tmp_path / "o")
        assert r.exit_code == 2, bad
        first, _ = _two_lines(r.stderr)
        assert f"--conf-threshold {bad} (a finite number, or a percentage in [0%, 100%])" in first
    assert not (tmp_path / "o").exists()


def test_infer_reports_every_bad_value_at_once(tmp_path: Path) -> None:
    r = run_cli("infer", tmp_path / "x.png", "--every", "0", "--max-points", "0", "--format", "npz,obj")
    assert r.exit_code == 2
    first, _ = _two_lines(r.stderr)
    assert first == (
        "Error: invalid infer settings: --format npz,obj (allowed: npz, ply, colmap); "
        "--every 0 (must be >= 1); --max-points 0 (must be >= 1)"
    )


# ---------------------------------------------------------------- cheap checks before expensive work


def test_infer_out_an_existing_file_fails_before_the_model(tmp_path: Path) -> None:
    img = _image(tmp_path / "a.png")
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    # A model that does not exist: had the model been loaded first, that would be the error.
    r = run_cli("infer", img, "--model", tmp_path / "missing.safetensors", "--out", afile)
    assert r.exit_code == 2
    first, _ = _two_lines(r.stderr)
    assert first == f"Error: invalid infer settings: --out {afile} (an existing file, not a folder)"
    assert afile.read_text() == "keep me"


def test_truncated_image_fails_before_the_model_loads(tmp_path: Path) -> None:
    good = _image(tmp_path / "imgs" / "a.jpg")
    data = good.read_bytes()
    (tmp_path / "imgs" / "b.jpg").write_bytes(data[: len(data) // 3])
    (tmp_path / "imgs" / "c.jpg").write_bytes(b"")
    r = run_cli(
        "-q", "infer", tmp_path / "imgs", "--model", tmp_path / "missing.safetensors", "--out", tmp_path / "o"
    )
    assert r.exit_code == 1
    first, _ = _two_lines(r.stderr)
    # Every unreadable image is listed, by name and why, in one error.
    assert first.startswith("Error: 2 of 3 images cannot be read: ")
    assert (
        f"{tmp_path / 'imgs' / 'b.jpg'} (" in first
        and f"{tmp_path / 'imgs' / 'c.jpg'} (empty file, 0 bytes)" in first
    )
    assert "missing.safetensors" not in r.stderr


def test_download_paths_are_checked_first_also_on_dry_run(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    for extra in ([], ["--dry-run"]):
        r = run_cli(
            "download",
            "eth3d",
            "--scenes",
            "courtyard",
            "--out",
            afile,
            "--base-url",
            "http://127.0.0.1:9/",
            *extra,
        )
        assert r.exit_code == 2, r.stderr
        assert (
            _two_lines(r.stderr)[0]
            == f"Error: invalid download settings: --out {afile} (an existing file, not a folder)"
        )
        r = run_cli("download", "eth3d", "--synthetic", "--out", afile / "sub", *extra)
        assert (
            r.exit_code == 2 and f"--out {afile / 'sub'} (cannot be created: {afile} is a file)" in r.stderr
        )
        r = run_cli("download", "weights", "--local-dir", afile, *extra)
        assert r.exit_code == 2
        assert _two_lines(r.stderr)[0] == (
            f"Error: invalid download weights settings: --local-dir {afile} (an existing file, not a folder)"
        )


def test_vggtctl_home_pointing_at_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.write_text("not a folder")
    monkeypatch.setenv("VGGTCTL_HOME", str(home))
    r = run_cli("download", "eth3d", "--scenes", "courtyard", "--dry-run")
    assert r.exit_code == 2
    first, hint = _two_lines(r.stderr)
    assert first == f"Error: VGGTCTL_HOME {home}: an existing file, not a folder"
    assert "VGGTCTL_HOME" in hint
    r = run_cli("download", "eth3d", "--synthetic")
    assert r.exit_code == 2 and "VGGTCTL_HOME" in r.stderr
    r = run_cli("env", "--json")
    assert r.exit_code == 0 and f"Warning: VGGTCTL_HOME {home}: an existing file" in r.stderr


def test_monitor_plot_into_a_folder_is_refused_before_reading(tmp_path: Path) -> None:
    plot = tmp_path / "plot.png"
    plot.mkdir()
    r = run_cli("monitor", tmp_path / "missing.log", "--plot", plot, "--window", "1")
    assert r.exit_code == 2
    assert _two_lines(r.stderr)[0] == (
        f"Error: invalid monitor options: --window 1 (at least 2); --plot {plot} (a folder; give a file name)"
    )


# ---------------------------------------------------------------- help and copy-paste


def test_root_help_lists_only_real_commands_and_has_examples() -> None:
    r = run_cli("--help", env={"COLUMNS": "120", "TERMINAL_WIDTH": "120"})
    assert r.exit_code == 0
    for missing in ("fine-tune", "train_vln"):
        assert missing not in r.stdout
    for command in ("download", "infer", "evaluate", "cache", "monitor", "env"):
        assert f"│ {command} " in r.stdout
    assert "Examples:" in r.stdout and "vggtctl download eth3d --synthetic" in r.stdout
    r = run_cli("download", "--help", env={"COLUMNS": "120", "TERMINAL_WIDTH": "120"})
    assert r.exit_code == 0 and "Examples:" in r.stdout and "vggtctl download weights --dry-run" in r.stdout


def test_download_weights_quotes_paths_for_copy_paste(tmp_path: Path) -> None:
    local = tmp_path / "my weights"
    r = run_cli("download", "weights", "--preset", "tiny", "--local-dir", local)
    assert r.exit_code == 0, r.stderr
    assert f"use it: vggtctl infer IMAGES --model '{local / 'model.safetensors'}'" in r.stdout


def test_one_synthetic_scene_is_singular(tmp_path: Path) -> None:
    r = run_cli("download", "eth3d", "--synthetic", "--scenes", "1", "--views", "1", "--out", tmp_path / "d")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines()[0] == "1 synthetic scene (1 view each, seed 0): synth_000"


def test_infer_config_names_fields_for_python_users(tmp_path: Path) -> None:
    from vggtctl.errors import ConfigError
    from vggtctl.services.infer import InferConfig

    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ConfigError) as e:
        InferConfig(inputs=["a.png"], out=afile, every=0, conf_threshold="nan", device="cuda:one").validate()
    assert str(e.value) == (
        "invalid infer settings: every=0 (must be >= 1); device='cuda:one' (not a device (use auto, cpu, cuda, "
        f"cuda:N)); conf_threshold='nan' (a finite number, or a percentage in [0%, 100%]); out='{afile}' "
        "(an existing file, not a folder)"
    )
    # The same problems, as the CLI shows them.
    assert e.value.render({"formats": "--format"}).startswith(
        "invalid infer settings: --every 0 (must be >= 1)"
    )
