"""`vggtctl monitor` on the console output of a real transformers Trainer run.

transformers 5.x prints the log dict with '%.4g' strings ({'loss': '3.884', ...}); 4.x printed floats. The
committed fixture is the output of tests/scripts/hf_trainer_tiny.py under transformers 5.24; where
transformers is installed the run is repeated and read fresh, so a future release's format shows up here.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.scripts import hf_trainer_tiny
from vggtctl.cli.app import app
from vggtctl.services.monitor.parse import LogParser, MetricsEvent, NoteEvent

runner = CliRunner()


def _printed(v: float) -> float:
    """What the Trainer's console shows of a logged float (its PrinterCallback / tqdm write: '%.4g')."""
    return float(f"{v:.4g}")


def _check(log: Path, history: list[dict[str, Any]]) -> None:
    steps = [h for h in history if "loss" in h]
    assert len(steps) == hf_trainer_tiny.STEPS
    expected = [
        {"loss": _printed(h["loss"]), "grad_norm": _printed(h["grad_norm"]), "lr": _printed(h["learning_rate"]),
         "epoch": _printed(h["epoch"])}
        for h in steps
    ]  # fmt: skip
    events = LogParser().parse(log.read_bytes())
    assert [e.values for e in events if isinstance(e, MetricsEvent)] == expected  # every step, in order
    final = [e for e in events if isinstance(e, NoteEvent) and e.kind == "finished"]
    assert [e.value for e in final] == [_printed(history[-1]["train_runtime"])]

    r = runner.invoke(app, ["monitor", str(log), "--json"])
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["state"] == "finished" and doc["step"] == doc["total_steps"] == hf_trainer_tiny.STEPS
    assert doc["loss"]["last"] == expected[-1]["loss"] and doc["loss"]["count"] == len(expected)
    assert doc["loss"]["moving_avg"] == pytest.approx(
        statistics.fmean(e["loss"] for e in expected), rel=1e-12
    )
    assert doc["lr"] == expected[-1]["lr"] and doc["grad_norm"] == expected[-1]["grad_norm"]
    assert doc["epoch"] == expected[-1]["epoch"]


def test_committed_transformers_5_log() -> None:
    log = hf_trainer_tiny.FIXTURE_LOG
    assert b"{'loss': '" in log.read_bytes()  # the 5.x form this test is about
    _check(log, json.loads(hf_trainer_tiny.FIXTURE_HISTORY.read_text()))


@pytest.mark.slow
def test_a_fresh_trainer_run_reads_as_the_trainer_reported(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")  # the Trainer needs it on PyTorch
    log, history = tmp_path / "train.log", tmp_path / "history.json"
    hf_trainer_tiny.run(log, history)
    _check(log, json.loads(history.read_text()))


def test_4x_floats_and_5x_strings_read_the_same() -> None:
    v4 = b"{'loss': 1.8183, 'grad_norm': 1.427, 'learning_rate': 5e-06, 'epoch': 0.005}\n"
    v5 = b"{'loss': '1.8183', 'grad_norm': '1.427', 'learning_rate': '5e-06', 'epoch': '0.005'}\n"
    want = {"loss": 1.8183, "grad_norm": 1.427, "lr": 5e-06, "epoch": 0.005}
    for line in (v4, v5):
        assert [e.values for e in LogParser().parse(line) if isinstance(e, MetricsEvent)] == [want]
    # a string that merely starts with digits is not a number; a NaN loss is still seen as one
    odd = b"{'loss': 'nan', 'grad_norm': '12abc', 'learning_rate': '1e-05'}\n"
    (event,) = [e for e in LogParser().parse(odd) if isinstance(e, MetricsEvent)]
    assert (
        set(event.values) == {"loss", "lr"}
        and event.values["lr"] == 1e-05
        and event.values["loss"] != event.values["loss"]
    )
