"""Following a growing log: rotation, truncation, a writer thread, stalls on a fake clock, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.procs import child_env, spawn
from vggtctl.runs import RunDir
from vggtctl.services.monitor import MonitorRequest, follow
from vggtctl.services.monitor.follow import FileTail
from vggtctl.services.monitor.summary import MonitorSummary

T0 = 1_769_454_000.0


def _bar(step: int, rate: float = 2.0, total: int = 100) -> bytes:
    e = int(step * rate)
    return f"\r{step}/{total} [{e // 60:02d}:{e % 60:02d}<59:00, {rate:.2f}s/it]".encode()


def test_tail_returns_whole_lines_and_keeps_the_rest(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    p.write_bytes(b"one\ntw")
    tail = FileTail(p)
    assert tail.poll() == (b"one\n", b"", False)
    with open(p, "ab") as f:
        f.write(b"o\n" + _bar(3))
    lines, partial, reset = tail.poll()
    # A finished tqdm redraw without its next \r is handed out, but kept: it comes back later, and whole
    # lines end at \n, so the redraws of a "[rank3]:" line stay with their prefix.
    assert (lines, partial, reset) == (b"two\n", _bar(3), False)
    with open(p, "ab") as f:
        f.write(_bar(4))
    assert tail.poll() == (b"", _bar(3) + _bar(4), False)
    with open(p, "ab") as f:
        f.write(b"\n")
    assert tail.poll() == (_bar(3) + _bar(4) + b"\n", b"", False)
    tail.close()


def test_tail_follows_truncation(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    p.write_bytes(b"line 1\nline 2\n")
    tail = FileTail(p)
    assert tail.poll()[0] == b"line 1\nline 2\n"
    p.write_bytes(b"new\n")  # copytruncate: same file, shorter
    assert tail.poll() == (b"new\n", b"", True)
    assert tail.truncations == 1
    tail.close()


def test_tail_follows_rotation(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    p.write_bytes(b"old 1\n")
    tail = FileTail(p)
    assert tail.poll()[0] == b"old 1\n"
    with open(p, "ab") as f:
        f.write(b"old 2\n")  # written just before the rotation: must not be lost
    os.rename(p, tmp_path / "a.log.1")
    assert tail.poll() == (b"old 2\n", b"", False)  # the new file does not exist yet
    p.write_bytes(b"new 1\n")
    assert tail.poll() == (b"new 1\n", b"", False)
    assert tail.rotations == 1
    tail.close()


def test_follow_sees_a_file_appended_by_a_thread(tmp_path: Path) -> None:
    p = tmp_path / "train.log"
    p.write_bytes(b"Loading model...\n")
    seen: list[int | None] = []

    def writer() -> None:
        for step in range(1, 11):
            with open(p, "ab") as f:
                f.write(_bar(step))
                if step % 5 == 0:
                    f.write(f"\r{{'loss': {1 / step}, 'learning_rate': 1e-05}}\n".encode())
            time.sleep(0.02)

    thread = threading.Thread(target=writer)
    deadline = time.monotonic() + 30

    def stop() -> bool:
        return seen[-1] == 10 or time.monotonic() > deadline

    def update(s: MonitorSummary) -> None:
        seen.append(s.step)

    thread.start()
    result = follow(MonitorRequest([p], window=5), interval=0.01, on_update=update, should_stop=stop)
    thread.join()
    assert result.reason == "stopped"
    assert result.summary.step == 10 and result.summary.total_steps == 100
    assert seen[0] is None or seen[0] < 10  # it started before the writer was done
    assert result.summary.recent is not None and result.summary.recent.median == 2.0
    assert result.summary.loss is not None and result.summary.loss.last == pytest.approx(0.1)


class FakeTime:
    """A clock that only moves when the follow loop sleeps; ``on_sleep`` may append to the log."""

    def __init__(self, start: float, on_sleep=None) -> None:  # noqa: ANN001
        self.now = start
        self.sleeps = 0
        self.on_sleep = on_sleep

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1
        if self.on_sleep:
            self.on_sleep(self)


def test_follow_stall_on_a_fake_clock(tmp_path: Path) -> None:
    p = tmp_path / "train.log"
    p.write_bytes(b"".join(_bar(n) for n in range(1, 5)) + b"\n")
    os.utime(p, (T0, T0))

    def append_once(t: FakeTime) -> None:
        if t.sleeps == 2:  # new progress at T0 + 20: the stall clock starts again from there
            with open(p, "ab") as f:
                f.write(_bar(5) + b"\n")

    fake = FakeTime(T0, append_once)
    states: list[tuple[float, str]] = []
    result = follow(
        MonitorRequest([p], stall_after=30),
        interval=10,
        on_update=lambda s: states.append((fake.now - T0, s.state)),
        exit_on_stall=True,
        clock=fake.clock,
        sleep=fake.sleep,
    )
    assert result.reason == "stalled" and result.summary.step == 5
    # Progress seen at +20; 30 s later is not yet a stall (strictly more is), +60 is.
    assert states == [(0, "running"), (10, "running"), (20, "running"), (30, "running"), (40, "running"),
                      (50, "running"), (60, "stalled")]  # fmt: skip
    assert result.summary.stall.last_progress_age_s == 40


def test_follow_waits_for_an_empty_log(tmp_path: Path) -> None:
    p = tmp_path / "train.log"
    p.write_bytes(b"")

    def start_writing(t: FakeTime) -> None:
        with open(p, "ab") as f:
            f.write(_bar(t.sleeps) + b"\n")

    fake = FakeTime(T0, start_writing)
    states: list[str] = []
    follow(
        MonitorRequest([p]),
        interval=1,
        on_update=lambda s: states.append(s.state),
        clock=fake.clock,
        sleep=fake.sleep,
        should_stop=lambda: fake.sleeps >= 3,
    )
    assert states[0] == "waiting" and states[-1] == "running"


def test_follow_ends_when_the_run_finishes(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path / "run", total_steps=3, rank=0)
    run.log_metrics({"step": 1, "loss": 1.0})

    def finish(t: FakeTime) -> None:
        run.log_metrics({"step": t.sleeps + 1, "loss": 1.0})
        if t.sleeps == 2:
            run.set_status("finished", step=3)

    fake = FakeTime(time.time(), finish)
    result = follow(
        MonitorRequest([run.path]), interval=1, on_update=lambda s: None, clock=fake.clock, sleep=fake.sleep
    )
    run.close()
    assert (result.reason, result.summary.step, result.summary.state) == ("finished", 3, "finished")


def test_follow_picks_up_rank_logs_that_appear_later(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path / "run", rank=0)
    run.log_metrics({"step": 1, "time": 100.0})

    def late_rank(t: FakeTime) -> None:
        with open(run.logs_dir / "rank1.log", "ab") as f:
            f.write(f"1970-01-01T00:01:{40 + 5 * t.sleeps:02d}Z step {t.sleeps}\n".encode())

    fake = FakeTime(time.time(), late_rank)
    result = follow(
        MonitorRequest([run.path]),
        interval=1,
        on_update=lambda s: None,
        clock=fake.clock,
        sleep=fake.sleep,
        should_stop=lambda: fake.sleeps >= 3,
    )
    run.close()
    assert [(r.rank, r.step) for r in result.summary.ranks] == [(0, 1), (1, 3)]
    assert result.summary.slowest_rank == 1 and result.summary.recent is not None
    assert result.summary.recent.median == 5.0


def test_ctrl_c_exits_0(tmp_path: Path) -> None:
    p = tmp_path / "train.log"
    p.write_bytes(b"".join(_bar(n) for n in range(1, 5)) + b"\n")
    # spawn(): SIGINT at its default in the child even when pytest runs as a background job (which
    # inherits an ignored SIGINT), and the child is killed and reaped whatever happens here.
    cmd = [sys.executable, "-m", "vggtctl", "monitor", str(p), "--follow", "--interval", "0.1"]
    with spawn(cmd, env=child_env(COLUMNS="120")) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # piped: one status line per change
        assert b"running | step 4/100 | 2 s/it" in first
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err


def test_ctrl_c_exits_0_when_pytest_runs_with_sigint_ignored(tmp_path: Path) -> None:
    """`nohup make test &`: the shell starts pytest with SIGINT ignored; the test above must still pass."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "bt"),
           f"{__file__}::test_ctrl_c_exits_0"]  # fmt: skip
    ignored = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731 - what a shell's `&` does
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, preexec_fn=ignored, env=child_env(),
                       cwd=Path(__file__).parent.parent)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout
