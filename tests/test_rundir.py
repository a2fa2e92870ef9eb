"""The run-directory layout and its writer/reader API (vggtctl.runs)."""

from __future__ import annotations

import json
import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from vggtctl.errors import InputError, UsageError
from vggtctl.runs import RunDir, RunStatus, checkpoint_name, format_step_line, is_run_dir, rank_log_name
from vggtctl.runs.layout import rank_from_log_name, step_from_checkpoint_name
from vggtctl.runs.logline import format_timestamp
from vggtctl.services.monitor.parse import LogParser, MetricsEvent, StepEvent


@dataclass
class _Cfg:
    lr: float = 1e-4
    steps: int = 100
    out: Path = Path("runs/x")
    layers: tuple[int, ...] = (4, 11)


def test_create_writes_the_layout(tmp_path: Path) -> None:
    run = RunDir.create(
        tmp_path / "run",
        _Cfg(),
        {"model": {"repo": "facebook/VGGT-1B", "sha256": "ab"}},
        total_steps=100,
        rank=0,
    )
    for name in ("config.yaml", "meta.json", "status.json", "logs", "checkpoints", "tb"):
        assert (run.path / name).exists(), name
    assert yaml.safe_load((run.path / "config.yaml").read_text()) == {
        "lr": 1e-4,
        "steps": 100,
        "out": "runs/x",
        "layers": [4, 11],
    }
    meta = json.loads((run.path / "meta.json").read_text())
    assert meta["model"] == {"repo": "facebook/VGGT-1B", "sha256": "ab"}
    assert meta["versions"]["vggtctl"] == "0.1.0"
    assert meta["host"] == socket.gethostname()
    status = json.loads((run.path / "status.json").read_text())
    assert status["state"] == "running"
    assert status["step"] == 0 and status["total_steps"] == 100
    assert status["pid"] == os.getpid()
    assert status["started_at"].endswith("+00:00")
    assert is_run_dir(run.path)
    assert not list(run.path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_existing_run_needs_exist_ok_and_resume_keeps_started_at(tmp_path: Path) -> None:
    first = RunDir.create(tmp_path / "run", {"a": 1}, rank=0)
    first.set_status(step=40)
    started = first.read_status().started_at  # type: ignore[union-attr]
    with pytest.raises(UsageError, match="already exists"):
        RunDir.create(tmp_path / "run", {"a": 1}, rank=0)
    resumed = RunDir.create(tmp_path / "run", {"a": 2}, exist_ok=True, total_steps=80, rank=0)
    status = resumed.read_status()
    assert status is not None
    assert (status.state, status.step, status.total_steps, status.started_at) == ("running", 40, 80, started)
    assert resumed.read_config() == {"a": 2}


def test_log_metrics_appends_one_flushed_line_per_call(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path / "run", rank=0)
    run.log_metrics({"step": 1, "loss": 0.5, "lr": 1e-4, "time": 1000.0})
    # Visible to another reader before close: flushed per record.
    assert (
        run.path / "metrics.jsonl"
    ).read_text() == '{"step": 1, "time": 1000.0, "loss": 0.5, "lr": 0.0001}\n'
    run.log_metrics({"step": 2, "loss": float("nan")})
    run.close()
    records = list(RunDir.open(run.path).iter_metrics())
    assert [r["step"] for r in records] == [1, 2]
    assert math.isnan(records[1]["loss"]) and isinstance(records[1]["time"], float)
    with pytest.raises(ValueError, match="integer 'step'"):
        run.log_metrics({"loss": 1.0})


def test_reader_skips_a_torn_last_record(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path / "run", rank=0)
    run.log_metrics({"step": 1, "loss": 1.0})
    run.close()
    with open(run.metrics_path, "a") as f:
        f.write('{"step": 2, "lo')  # the writer crashed mid-record
    assert [r["step"] for r in run.iter_metrics()] == [1]


def test_set_status_merges_and_validates(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path / "run", total_steps=10, rank=0)
    run.set_status(step=5, note="warmup done")
    done = run.set_status("finished", step=10)
    assert done is not None
    on_disk = json.loads(run.status_path.read_text())
    assert on_disk["state"] == "finished" and on_disk["step"] == 10 and on_disk["total_steps"] == 10
    assert on_disk["note"] == "warmup done"  # extra fields survive later updates
    assert RunStatus.from_dict(on_disk).extra == {"note": "warmup done"}
    with pytest.raises(ValueError, match="running, finished, failed"):
        run.set_status("paused")
    with pytest.raises(ValueError, match="pid cannot be set"):
        run.set_status(pid=1)


def test_other_ranks_do_not_write(tmp_path: Path) -> None:
    RunDir.create(tmp_path / "run", {"a": 1}, total_steps=10, rank=0)
    before = (tmp_path / "run" / "status.json").read_text()
    worker = RunDir.create(tmp_path / "run", {"a": 999}, rank=3)
    assert not worker.is_writer
    worker.log_metrics({"step": 1, "loss": 1.0})
    assert worker.set_status("failed") is None
    assert (tmp_path / "run" / "status.json").read_text() == before
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    with worker.open_rank_log() as f:
        f.write("hello from rank 3\n")
    assert (tmp_path / "run" / "logs" / "rank3.log").read_text() == "hello from rank 3\n"
    assert RunDir.open(tmp_path / "run").rank_logs() == {3: tmp_path / "run" / "logs" / "rank3.log"}


def test_rank_defaults_to_the_torchrun_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "2")
    assert RunDir(tmp_path).rank == 2 and not RunDir(tmp_path).is_writer
    monkeypatch.delenv("RANK")
    assert RunDir(tmp_path).is_writer


def test_checkpoint_and_rank_log_names(tmp_path: Path) -> None:
    assert checkpoint_name(100) == "step_0000100"
    assert step_from_checkpoint_name("step_0000100") == 100
    assert step_from_checkpoint_name("latest") is None
    assert rank_log_name(7) == "rank7.log" and rank_from_log_name("rank7.log") == 7
    assert rank_from_log_name("rank7.log.1") is None
    run = RunDir.create(tmp_path / "run", rank=0)
    for step in (200, 100, 1000):
        run.checkpoint_dir(step).mkdir(parents=True)
    (run.checkpoints_dir / "notes.txt").write_text("x")
    assert [s for s, _ in run.checkpoints()] == [100, 200, 1000]
    assert run.checkpoint_dir(100) == run.path / "checkpoints" / "step_0000100"


def test_open_rejects_non_run_directories(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        RunDir.open(tmp_path / "missing")
    with pytest.raises(InputError, match="not a vggtctl run directory"):
        RunDir.open(tmp_path)
    (tmp_path / "status.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="not a valid status file"):
        RunDir.open(tmp_path).read_status()


def test_unsaveable_config_value_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"config\.fn is a function"):
        RunDir.create(tmp_path / "run", {"fn": lambda: 1}, rank=0)


def test_step_line_is_read_back_by_the_monitor_parser() -> None:
    line = format_step_line(
        150, 28710, {"loss": 0.91234567, "lr": 2e-5, "step_time": 18.5, "data_time": 0.125}, when=1770053400.5
    )
    assert (
        line
        == "2026-02-02T17:30:00.500Z step 150/28710 loss=0.912346 lr=2e-05 step_time=18.5 data_time=0.125"
    )
    events = LogParser(rank=1).parse(line.encode() + b"\n")
    assert events == [
        StepEvent(150, 28710, 1770053400.5, 18.5, "log", 1, True),
        MetricsEvent({"loss": 0.912346, "lr": 2e-05, "data_time": 0.125}, 1, "log"),
    ]
    assert format_timestamp(0.9996) == "1970-01-01T00:00:01.000Z"
