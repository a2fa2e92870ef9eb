"""`vggtctl monitor` through the CLI: output, JSON, exit codes, bad input, plots, GPU note, TensorBoard."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.test_monitor_samples import deepspeed_log, hf_trainer_log, torchrun_log, write
from vggtctl.cli.app import app
from vggtctl.runs import RunDir

runner = CliRunner()


def _run(*args: str):  # noqa: ANN202 - click Result
    return runner.invoke(app, ["monitor", *args])


def _fresh(path: Path) -> Path:
    now = time.time()
    os.utime(path, (now, now))
    return path


def _old(path: Path, age: float = 86_400) -> Path:
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_human_summary(tmp_path: Path) -> None:
    p = _fresh(write(tmp_path, "train.log", hf_trainer_log()))
    r = _run(str(p), "--window", "5")
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "(hf-dict, tqdm)" in out
    assert "running" in out
    assert "12 / 28,710 (0.04%)" in out
    assert "55.01 s/it = 0.01818 steps/s (median of 5; p10-p90 54.82-55.2 s/it; mean 55.01)" in out
    assert "18d 06h 31m" in out  # ETA: 28,698 steps x 55.01 s
    assert "0.85 last; 1.02 mean of last 5; falling (-33.3% over the window)" in out
    assert "NaN/inf loss" in out and "1 (first at step 10)" in out


def test_json_is_one_document(tmp_path: Path) -> None:
    p = _fresh(write(tmp_path, "ds.log", deepspeed_log()))
    r = _run(str(p), "--json", "--batch-size", "32")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["step"] == 40 and doc["state"] == "running"
    assert doc["recent"]["s_per_it"]["median"] == 55.0
    assert doc["recent"]["steps_per_s"]["median"] == pytest.approx(1 / 55)
    assert doc["samples_per_s"] == pytest.approx(32 / 55)  # --batch-size wins over the log's 64
    assert doc["formats"] == ["step-line"]


def test_json_nan_loss_is_valid_json(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path / "run", rank=0)
    run.log_metrics({"step": 1, "loss": float("nan")})
    run.close()
    r = _run(str(run.path), "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)  # strict JSON: NaN is written as a string
    assert doc["loss"]["last"] == "nan" and doc["loss"]["nonfinite"] == 1


def test_glob_picks_the_newest_log(tmp_path: Path) -> None:
    old = _old(write(tmp_path, "train_1.log", torchrun_log()))
    new = _fresh(write(tmp_path, "train_2.log", deepspeed_log()))
    r = _run(str(old), str(new), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["path"] == str(new)


def test_multi_rank_table_names_the_slowest(tmp_path: Path) -> None:
    r = _run(str(_fresh(write(tmp_path, "t.log", torchrun_log()))))
    assert r.exit_code == 0, r.output
    assert "slowest is rank 1 (s/it by rank: 0: 2, 1: 2.5)" in r.stdout


def test_exit_on_stall(tmp_path: Path) -> None:
    p = _old(write(tmp_path, "train.log", hf_trainer_log()))
    r = _run(str(p), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["state"] == "stalled"
    r = _run(str(p), "--json", "--exit-on-stall")
    assert r.exit_code == 3
    assert json.loads(r.stdout)["stall"]["stalled"] is True
    r = _run(str(_fresh(p)), "--exit-on-stall", "--stall-after", "3600")
    assert r.exit_code == 0


def test_follow_exit_on_stall_prints_one_json(tmp_path: Path) -> None:
    p = _old(write(tmp_path, "train.log", hf_trainer_log()))
    r = _run(str(p), "--follow", "--interval", "0.05", "--exit-on-stall", "--json")
    assert r.exit_code == 3
    assert json.loads(r.stdout)["state"] == "stalled"


def test_follow_of_a_finished_run_exits_0(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path / "run", total_steps=2, rank=0)
    run.log_metrics({"step": 2, "loss": 0.5})
    run.set_status("finished", step=2)
    run.close()
    r = _run(str(run.path), "--follow", "--interval", "0.05")
    assert r.exit_code == 0, r.output
    assert "finished" in r.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "Error: not found:"),
        (b"", "Error: log is empty:"),
        (b"PK\x03\x04\x00\x00binary", "is a binary file (NUL byte at offset 4)"),
    ],
)
def test_bad_input(tmp_path: Path, content: bytes | None, message: str) -> None:
    p = tmp_path / "x.log"
    if content is not None:
        p.write_bytes(content)
    r = _run(str(p))
    assert r.exit_code == 1
    assert message in r.stderr and "Hint:" in r.stderr
    assert "Traceback" not in r.output


def test_log_without_progress_names_formats_and_a_sample(tmp_path: Path) -> None:
    p = write(tmp_path, "x.log", b"Loading checkpoint shards\nmodel ready\n")
    r = _run(str(p))
    assert r.exit_code == 1
    err = " ".join(r.stderr.split())  # undo Rich's wrapping
    assert "no training progress found in" in err
    assert "tqdm progress bars" in err and "HF Trainer metric dicts" in err and "metrics.jsonl" in err
    assert "last line: 'model ready'" in err


def test_plain_directory_is_not_a_run(tmp_path: Path) -> None:
    write(tmp_path, "train_20260126.log", b"x\n")
    r = _run(str(tmp_path))
    assert r.exit_code == 1
    err = " ".join(r.stderr.split())
    assert "not a vggtctl run directory" in err and "vggtctl monitor" in err and "train_20260126.log" in err


def test_unreadable_log(tmp_path: Path) -> None:
    p = write(tmp_path, "x.log", b"1/2 [00:01<00:01, 1.00s/it]\n")
    p.chmod(0)
    cmd = [sys.executable, "-m", "vggtctl", "monitor", str(p)]
    if os.geteuid() == 0:
        # Root reads any file through CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH: run the CLI without them.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and util-linux setpriv is missing: cannot drop CAP_DAC_OVERRIDE")
        probe = subprocess.run(
            [setpriv, "--bounding-set=-dac_override,-dac_read_search", "true"], check=False
        )
        if probe.returncode != 0:
            pytest.skip("running as root without CAP_SETPCAP: cannot drop CAP_DAC_OVERRIDE")
        cmd = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 1, r.stderr
    assert f"Error: cannot read {p}: permission denied" in " ".join(r.stderr.split()), r.stderr
    assert "Hint: check the permissions" in r.stderr and r.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ["--window", "1"],
        ["--interval", "0"],
        ["--stall-after", "-5"],
        ["--plot", "out.txt"],
        ["--follow", "--plot", "a.png"],
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    p = write(tmp_path, "t.log", torchrun_log())
    r = _run(str(p), *args)
    assert r.exit_code == 2, r.output
    assert "Error:" in r.stderr


def test_plot_png_and_html(tmp_path: Path) -> None:
    p = _fresh(write(tmp_path, "train.log", hf_trainer_log()))
    r = _run(str(p), "--plot", str(tmp_path / "p.png"))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = _run(str(p), "--plot", str(tmp_path / "p.html"), "--json")
    assert r.exit_code == 0, r.output
    page = (tmp_path / "p.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "</html>" in page
    assert "<th>step</th><td>12 / 28710</td>" in page
    assert json.loads(r.stdout)["step"] == 12


def test_gpu_report_never_fails(tmp_path: Path) -> None:
    from vggtctl.runtime.gpu import query_gpus

    r = _run(str(_fresh(write(tmp_path, "t.log", torchrun_log()))), "--gpu", "--json")
    assert r.exit_code == 0, r.output
    gpu = json.loads(r.stdout)["gpu"]
    report = query_gpus()
    assert gpu["available"] is report.available
    if report.available:
        assert len(gpu["gpus"]) >= 1 and gpu["gpus"][0]["memory_total_mb"] > 0
    else:
        assert gpu["gpus"] == [] and ("NVML" in gpu["note"] or "nvidia-ml-py" in gpu["note"])


def test_tensorboard_missing_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules is Python's own "this module cannot be imported" (import raises
    # ModuleNotFoundError, find_spec returns None): TensorBoard is absent for this test, installed or not.
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    run = RunDir.create(tmp_path / "run", rank=0)
    run.log_metrics({"step": 1, "loss": 1.0})
    (run.tb_dir / "events.out.tfevents.1.host").write_bytes(b"\x00")
    r = _run(str(run.path), "--tensorboard")
    assert r.exit_code == 1
    assert "TensorBoard is not installed" in r.stderr and "pip install 'vggtctl[train]'" in r.stderr


def test_tensorboard_command_binds_loopback(tmp_path: Path) -> None:
    from vggtctl.services.monitor.tensorboard import event_dir, tensorboard_command

    run = RunDir.create(tmp_path / "run", rank=0)
    with pytest.raises(Exception, match="no TensorBoard event files"):
        event_dir(run.path)
    (run.tb_dir / "events.out.tfevents.1.host").write_bytes(b"\x00")
    assert event_dir(run.path) == run.tb_dir
    cmd = tensorboard_command(run.tb_dir, "127.0.0.1", 6006)
    assert cmd[1:] == [
        "-m",
        "tensorboard.main",
        "--logdir",
        str(run.tb_dir),
        "--host",
        "127.0.0.1",
        "--port",
        "6006",
    ]


def test_help_has_examples_and_cli_import_stays_light() -> None:
    r = runner.invoke(app, ["monitor", "--help"])
    assert r.exit_code == 0
    assert "vggtctl monitor runs/lora-eth3d --follow --gpu" in r.stdout
    code = (
        "import sys, vggtctl.cli.app; assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="needs the vggtctl[train] extra")
def test_tensorboard_serves_on_loopback(tmp_path: Path) -> None:
    import socket
    import urllib.request

    from vggtctl.services.monitor.tensorboard import start_tensorboard

    run = RunDir.create(tmp_path / "run", rank=0)
    (run.tb_dir / "events.out.tfevents.1.host").write_bytes(b"")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = start_tensorboard(run.path, "127.0.0.1", port)
    try:
        assert server.url == f"http://127.0.0.1:{port}/"
        with urllib.request.urlopen(server.url, timeout=30) as response:
            assert response.status == 200
    finally:
        server.stop()
    assert server.process.poll() is not None
