"""Summaries against hand-computed figures: s/it, ETA, loss, restarts, ranks, stalls (fake clock)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_monitor_samples import HF_TOTAL, deepspeed_log, hf_trainer_log, torchrun_log, write
from vggtctl.runs import RunDir, format_step_line
from vggtctl.services.monitor import MonitorRequest, summarize
from vggtctl.services.monitor.stats import LogHistogram, RateStats, linear_slope, quantile

T0 = 1_769_454_000.0  # the log's last write, as the file's mtime


def _at(path: Path, mtime: float = T0) -> Path:
    os.utime(path, (mtime, mtime))
    return path


def _summary(path: Path, now: float, **kw: object):  # noqa: ANN202 - MonitorSummary
    return summarize(MonitorRequest([path], **kw), clock=lambda: now)  # type: ignore[arg-type]


def test_hf_trainer_summary(tmp_path: Path) -> None:
    data = hf_trainer_log()
    assert data.endswith(b"55.01s/it]")  # the last bar redraw has no newline yet: it still counts
    s = _summary(_at(write(tmp_path, "train.log", data)), T0 + 100, window=5)
    assert (s.step, s.total_steps, s.kind) == (12, HF_TOTAL, "log")
    assert s.progress_pct == pytest.approx(100 * 12 / 28710)
    # Last 5 tqdm rates (steps 8..12): 55.30 54.70 55.05 55.00 55.01.
    assert s.recent is not None
    assert s.recent.median == pytest.approx(55.01)
    assert s.recent.p10 == pytest.approx(54.70 + 0.4 * (55.00 - 54.70))
    assert s.recent.p90 == pytest.approx(55.05 + 0.6 * (55.30 - 55.05))
    assert s.recent.mean == pytest.approx(275.06 / 5)
    # Overall: 12 updates; the mean is first to last sample: 661 s of tqdm elapsed over 12 steps.
    assert s.overall is not None and s.overall.count == 12
    assert s.overall.median == pytest.approx(55.01, rel=1e-3)
    assert s.overall.mean == pytest.approx(661 / 12)
    assert s.elapsed_s == 661
    assert s.eta_s == pytest.approx((28710 - 12) * 55.01)
    # Losses 1.2 1.1 1.0 0.95 NaN 0.85: the NaN is counted, not averaged.
    assert s.loss is not None
    assert (s.loss.last, s.loss.count, s.loss.nonfinite, s.loss.first_nonfinite_step) == (0.85, 6, 1, 10)
    assert s.loss.moving_avg == pytest.approx(5.10 / 5)
    # Least squares through (0,1.2) (1,1.1) (2,1.0) (3,0.95) (4,0.85): slope -0.085, over 4 steps -0.34.
    assert s.loss.trend == "falling"
    assert s.loss.trend_pct == pytest.approx(-100 * 0.34 / 1.02)
    assert s.lr == pytest.approx(1.88e-05)
    # Updates every 55 s → stall after 5 x 55 = 275 s; the file was written 100 s ago.
    assert s.stall.threshold_s == pytest.approx(275)
    assert (s.stall.stalled, s.state) == (False, "running")
    assert s.formats == ["hf-dict", "tqdm"]
    stalled = _summary(tmp_path / "train.log", T0 + 300, window=5)
    assert (stalled.stall.stalled, stalled.state) == (True, "stalled")
    assert stalled.stall.last_progress_age_s == pytest.approx(300)


def test_a_line_being_written_is_ignored(tmp_path: Path) -> None:
    s = _summary(_at(write(tmp_path, "train.log", hf_trainer_log(end_with_partial_dict=True))), T0, window=5)
    assert s.step == 12 and s.loss is not None and s.loss.count == 6


def test_deepspeed_summary(tmp_path: Path) -> None:
    s = _summary(_at(write(tmp_path, "ds.log", deepspeed_log())), T0 + 2000)
    # Steps 10→20→30→40 at 19:10:00, 19:19:10, 19:28:30, 19:37:40: 550, 560, 550 s per 10 steps.
    assert s.step == 40 and s.total_steps is None and s.eta_s is None
    assert s.recent is not None and s.recent.median == pytest.approx(55.0)
    assert s.recent.mean == pytest.approx(166 / 3)
    assert s.overall is not None and s.overall.mean == pytest.approx(1660 / 30)
    assert s.elapsed_s == pytest.approx(1660)
    # train_batch_size 64 from the config dump: 64 samples per 55 s step.
    assert s.samples_per_s == pytest.approx(64 / 55)
    assert s.lr == pytest.approx(1.6e-05)
    assert s.stall.threshold_s == pytest.approx(2750) and s.state == "running"
    assert _summary(tmp_path / "ds.log", T0 + 2800).state == "stalled"


def test_multi_rank_reports_the_slowest_rank(tmp_path: Path) -> None:
    s = _summary(_at(write(tmp_path, "torchrun.log", torchrun_log())), T0)
    assert s.slowest_rank == 1
    assert [(r.rank, r.step, r.s_per_it) for r in s.ranks] == [(0, 6, 2.0), (1, 6, 2.5)]
    assert s.recent is not None and s.recent.median == 2.5
    assert s.eta_s == pytest.approx(94 * 2.5)


def test_restart_is_counted_and_stats_cover_the_new_segment(tmp_path: Path) -> None:
    bars = [f"\r{n}/50 [00:{4 * n:02d}<02:00, 4.00s/it]" for n in range(0, 6)]
    # Resumed from the checkpoint at step 3: a new bar, now at 3 s/it.
    bars += [f"\r{n}/50 [00:{3 * (n - 3):02d}<02:00, 3.00s/it]" for n in range(3, 9)]
    s = _summary(_at(write(tmp_path, "r.log", "".join(bars).encode() + b"\n")), T0, window=10)
    assert s.restarts == 1
    assert [(r.from_step, r.to_step) for r in s.restart_log] == [(5, 3)]
    assert s.step == 8 and s.recent is not None and s.recent.count == 5 and s.recent.median == 3.0
    assert s.elapsed_s == 15.0


def test_exception_after_the_last_progress_means_failed(tmp_path: Path) -> None:
    bars = "".join(f"\r{n}/50 [00:{2 * n:02d}<01:00, 2.00s/it]" for n in range(1, 4))
    crash = '\nTraceback (most recent call last):\n  File "train.py", line 9\nRuntimeError: NCCL timeout\n'
    s = _summary(_at(write(tmp_path, "a.log", (bars + crash).encode())), T0)
    assert s.state == "failed" and s.error == "RuntimeError: NCCL timeout"
    s = _summary(
        _at(write(tmp_path, "b.log", (bars + crash + "\r4/50 [00:08<01:00, 2.00s/it]\n").encode())), T0
    )
    assert s.state == "running" and s.error is None


def test_finished_runs(tmp_path: Path) -> None:
    done = "".join(f"\r{n}/4 [00:0{n}<00:00, 1.00s/it]" for n in range(5)) + "\n"
    s = _summary(_at(write(tmp_path, "done.log", done.encode())), T0 + 10_000)
    assert (s.state, s.eta_s, s.progress_pct) == ("finished", 0.0, 100.0)
    final = "\r1/9 [00:01<00:08, 1.00s/it]\n{'train_runtime': 9.1, 'train_loss': 0.5, 'epoch': 1.0}\n"
    assert _summary(_at(write(tmp_path, "final.log", final.encode())), T0 + 10_000).state == "finished"


def test_explicit_stall_after(tmp_path: Path) -> None:
    p = _at(write(tmp_path, "x.log", b"2026-01-26T19:00:00Z step 1/10\n2026-01-26T19:00:02Z step 2/10\n"))
    s = _summary(p, T0 + 61, stall_after=60)
    assert (s.state, s.stall.threshold_s, s.stall.threshold_from) == ("stalled", 60, "--stall-after")
    assert _summary(p, T0 + 59, stall_after=60).state == "running"


def test_no_timing_gives_no_stall_verdict(tmp_path: Path) -> None:
    s = _summary(_at(write(tmp_path, "x.log", b"step 1\nstep 2\n")), T0 + 10**6)
    assert (s.step, s.state, s.stall.stalled) == (2, "unknown", None)


def _run_dir(tmp_path: Path, per_step: float = 3.0) -> RunDir:
    run = RunDir.create(tmp_path / "run", {"lr": 1e-4, "global_batch_size": 64}, total_steps=100, rank=0)
    for step in range(1, 11):
        run.log_metrics(
            {
                "step": step,
                "time": T0 - 100 + per_step * step,
                "loss": 2.0 - 0.1 * step,
                "lr": 1e-4,
                "samples": 64 * step,
                "step_time": per_step,
                "data_time": 1.2,
            }
        )
    run.set_status(step=10)
    run.close()
    return run


def test_run_directory_summary(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    _at(run.metrics_path)
    s = _summary(run.path, T0 + 5, window=5)
    assert (s.kind, s.step, s.total_steps, s.formats) == ("run", 10, 100, ["metrics.jsonl"])
    assert s.recent is not None and s.recent.median == 3.0
    assert s.eta_s == pytest.approx(90 * 3.0)
    assert s.elapsed_s == pytest.approx(27.0)  # first record at step 1, last at step 10
    # Cumulative samples over the last 6 records (window + 1): 64 x 5 samples in 15 s.
    assert (s.samples_per_s, s.samples_from) == (pytest.approx(64 / 3), "logged samples")
    assert s.data_wait_share == pytest.approx(0.4)
    assert any("data loading takes 40%" in n for n in s.notes)
    assert s.loss is not None and s.loss.moving_avg == pytest.approx((1.4 + 1.3 + 1.2 + 1.1 + 1.0) / 5)
    assert s.state == "running"  # this process wrote status.json: it is alive


def test_run_directory_rank_logs_and_the_slowest_rank(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    with RunDir(run.path, rank=1).open_rank_log() as f:
        for step in range(1, 11):
            # Rank 1 is slower, and its losses are not counted twice (metrics.jsonl has them).
            f.write(
                format_step_line(step, 100, {"loss": 9.0, "step_time": 3.5}, when=T0 - 100 + 3.5 * step)
                + "\n"
            )
    s = _summary(run.path, T0, window=5)
    assert s.slowest_rank == 1 and s.recent is not None and s.recent.median == 3.5
    assert s.eta_s == pytest.approx(90 * 3.5)
    assert s.loss is not None and s.loss.count == 10 and s.loss.last == pytest.approx(1.0)
    assert "step-line" in s.formats and "metrics.jsonl" in s.formats


def test_run_directory_states(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    writer = RunDir(run.path, rank=0)
    writer.set_status("failed", message="CUDA out of memory")
    s = _summary(run.path, T0)
    assert (s.state, s.state_reason) == ("failed", "CUDA out of memory")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    writer.set_status("running")
    # As if another process had written it and died since.
    text = run.status_path.read_text().replace(f'"pid": {os.getpid()}', f'"pid": {dead.pid}')
    assert f'"pid": {dead.pid}' in text
    run.status_path.write_text(text)
    assert _summary(run.path, T0).state == "exited"
    writer.set_status("finished", step=100)
    assert _summary(run.path, T0).state == "finished"


def test_tail_first_read_matches_a_full_read(tmp_path: Path) -> None:
    head = "".join(
        f"\r{n}/100000 [{n * 2 // 60:02d}:{n * 2 % 60:02d}<99:00:00, 2.00s/it]" for n in range(0, 200)
    )
    filler = (
        "[rank0]: UserWarning: None of the inputs have requires_grad=True. Gradients will be None\n" * 40_000
    )
    tail = "".join(
        f"\r{n}/100000 [{n * 2 // 3600}:{n * 2 % 3600 // 60:02d}:{n * 2 % 60:02d}<99:00:00, {1.5 + n % 3}s/it]"
        + (f"\n{{'loss': {1000 / n:.4f}}}\n" if n % 5 == 0 else "")
        for n in range(5000, 5100)
    )
    p = _at(write(tmp_path, "big.log", (head + "\n" + filler + tail).encode()))
    tail_first = _summary(p, T0, window=10, full_read_bytes=1 << 20)
    full = _summary(p, T0, window=10)
    assert p.stat().st_size > 3_000_000
    assert tail_first.scanned_bytes < 200_000 < 3_000_000 < full.scanned_bytes
    for field in ("step", "total_steps", "recent", "elapsed_s", "eta_s", "loss", "lr", "state"):
        assert getattr(tail_first, field) == getattr(full, field), field
    # The head's first sample anchors the overall mean: 10198 s of tqdm elapsed over steps 0..5099.
    assert tail_first.overall is not None and full.overall is not None
    assert tail_first.overall.mean == pytest.approx(10198 / 5099) == full.overall.mean
    assert any("tail-first" in n for n in tail_first.notes)


def test_statistics_helpers() -> None:
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert quantile([5.0], 0.9) == 5.0
    stats = RateStats.of([2.0, 4.0])
    assert stats is not None and stats.to_dict()["steps_per_s"] == {
        "median": 1 / 3,
        "p10": 1 / 3.8,
        "p90": 1 / 2.2,
    }
    assert linear_slope([3.0, 5.0, 7.0]) == 2.0
    h = LogHistogram()
    for v in [1.0] * 10 + [2.0] * 80 + [100.0] * 10:
        h.add(v)
    assert (h.quantile(0.05), h.quantile(0.5), h.quantile(0.95)) == (1.0, 2.0, 100.0)
    h.add(0.0)
    assert h.count == 101 and h.quantile(0.0) == 0.0


def test_plot_of_a_big_log_reads_evenly_spaced_bars(tmp_path: Path) -> None:
    from vggtctl.services.monitor import MonitorSession

    bars = "".join(
        f"\r{n}/100000 [{n // 3600}:{n % 3600 // 60:02d}:{n % 60:02d}<9:00:00, 1.00s/it]"
        + ("\n{'loss': 0.5}\n" if n % 100 == 0 else "")
        for n in range(100_000)
    )
    p = _at(write(tmp_path, "big.log", bars.encode() + b"\n"))
    request = MonitorRequest([p], full_read_bytes=1 << 20, plot=tmp_path / "p.png")
    with MonitorSession(request, clock=lambda: T0) as session:
        assert session.summary().scanned_bytes < p.stat().st_size
        history = session.history()
    assert history is not session.tracker
    (series,) = history.main_series().values()
    # ~100k bars / 20k wanted: every 5th is read, from the first to the last.
    assert 15_000 < series.updates < 25_000
    assert series.history is not None
    xs = [x for x, _ in series.history.points]
    assert xs[0] <= 10 and xs[-1] >= 99_000 and len(xs) <= 4000
    summarize(request, clock=lambda: T0)
    assert (tmp_path / "p.png").stat().st_size > 10_000
