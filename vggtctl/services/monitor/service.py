"""``vggtctl monitor``: read a run directory or a log, tail-first, and summarise it; or follow it live.

A summary reads only what it needs: files up to ``full_read_bytes`` are read whole; bigger ones are read
backwards from the end until the last ``window`` updates (and losses) are in, plus the head of the file
up to the first progress line so that the overall average and elapsed time cover the whole run.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from vggtctl.errors import InputError
from vggtctl.runs import layout
from vggtctl.runs.rundir import RunDir, RunStatus
from vggtctl.runtime.gpu import NvmlSession
from vggtctl.services.monitor.follow import FileTail
from vggtctl.services.monitor.parse import (
    FORMATS_TRIED,
    Event,
    LogParser,
    MetricsEvent,
    NoteEvent,
    StepEvent,
    parse_metrics_jsonl,
)
from vggtctl.services.monitor.reader import (
    BLOCK,
    FIRST_BLOCK,
    check_log_file,
    iter_blocks_backward,
    iter_chunks_forward,
    last_terminator,
    looks_complete,
    sample_line,
)
from vggtctl.services.monitor.run_state import SeriesKey, Tracker, series_priority
from vggtctl.services.monitor.summary import MonitorSummary, build_summary, gpu_notes

DEFAULT_WINDOW = 20
FULL_READ_BYTES = 32 << 20
HEAD_BYTES = 16 << 20
EXTRA_BYTES = 8 << 20
PLOT_BARS = 20_000
STOPPED_STATES = ("stalled", "failed", "exited")
"""States ``--exit-on-stall`` turns into exit code 3: progress has stopped."""

Clock = Callable[[], float]


@dataclass
class MonitorRequest:
    """What to monitor and how.

    Attributes:
        paths: A run directory or log file; several files (a shell glob) mean the newest one.
        window: Number of recent updates behind the "last N" figures.
        stall_after: Seconds without progress that make a stall (default: 5x the median update gap).
        batch_size: Samples per optimizer step, for samples/s (else taken from the run or log).
        gpu: Add NVML GPU memory/utilisation.
        plot: Write loss and s/it over steps to this .png or .html (reads the whole file; in a file larger
            than ``full_read_bytes``, about ``PLOT_BARS`` evenly spaced tqdm bars are read).
        full_read_bytes: Files up to this size are read whole; larger ones tail-first.
    """

    paths: list[Path]
    window: int = DEFAULT_WINDOW
    stall_after: float | None = None
    batch_size: float | None = None
    gpu: bool = False
    plot: Path | None = None
    full_read_bytes: int = FULL_READ_BYTES


@dataclass
class FollowResult:
    """How a follow ended: ``stopped`` (asked to), ``stalled`` (``exit_on_stall``), ``finished``/``failed``
    (the run directory's status)."""

    summary: MonitorSummary
    reason: str


@dataclass
class _Source:
    path: Path
    kind: str
    rank: int | None
    parser: LogParser = field(default_factory=LogParser)
    tail: FileTail | None = None
    scanned: int = 0
    size: int = 0
    bad_lines: int = 0
    events: int = 0
    read_whole: bool = False
    bars_per_byte: float = 0.0

    def parse(self, data: bytes) -> list[Event]:
        if self.kind == "jsonl":
            events, bad = parse_metrics_jsonl(data, self.rank)
            self.bad_lines += bad
        else:
            events = self.parser.parse(data)
        self.events += len(events)
        return events

    def formats(self) -> set[str]:
        if self.kind == "jsonl":
            return {"metrics.jsonl"} if self.events else set()
        return self.parser.formats


class _TailBudget:
    """Decides when a backward read has enough: the main series of every rank seen has ``window + 1``
    distinct steps and ``window`` losses are in, or, failing the rest, a bounded amount more was read."""

    def __init__(self, window: int, want_losses: bool) -> None:
        self.need = window + 1
        self.want_losses = want_losses
        self.steps: dict[tuple[int | None, SeriesKey], set[int]] = {}
        self.losses = 0
        self.bytes = 0
        self.first_ok: int | None = None

    def add(self, events: list[Event], nbytes: int) -> bool:
        self.bytes += nbytes
        for ev in events:
            if isinstance(ev, StepEvent):
                key = (ev.rank, (ev.source, ev.total if ev.source == "tqdm" else None))
                self.steps.setdefault(key, set()).add(ev.step)
            elif isinstance(ev, MetricsEvent) and "loss" in ev.values:
                self.losses += 1
        best: dict[int | None, tuple[tuple[int, int, int], int]] = {}
        for (rank, key), steps in self.steps.items():
            prio = series_priority(key, len(steps))
            if rank not in best or prio > best[rank][0]:
                best[rank] = (prio, len(steps))
        if not best or max(n for _, n in best.values()) < self.need:
            return False
        if self.first_ok is None:
            self.first_ok = self.bytes
        ranks_ok = all(n >= self.need for _, n in best.values())
        losses_ok = not self.want_losses or self.losses >= self.need - 1
        if ranks_ok and losses_ok:
            return True
        return self.bytes >= max(EXTRA_BYTES, 4 * self.first_ok)


def pick_path(paths: list[Path]) -> tuple[Path, list[str]]:
    """The path to read: the only one, or the most recently modified of several (a shell glob)."""
    if not paths:
        raise InputError("no path given", "vggtctl monitor RUN_DIR_OR_LOG")
    if len(paths) == 1:
        return paths[0], []
    existing = [p for p in paths if p.exists()]
    if not existing:
        raise InputError(f"none of the {len(paths)} paths exist: {paths[0]} ...", "check the paths")
    newest = max(existing, key=lambda p: p.stat().st_mtime)
    return newest, [f"{len(paths)} paths given; reading the most recently modified: {newest}"]


def process_alive(status: RunStatus | None) -> bool | None:
    """Whether a running run's writer process exists (None: not running, no pid, or another host)."""
    if status is None or status.state != "running" or not status.pid:
        return None
    if status.host and status.host != socket.gethostname():
        return None
    try:
        os.kill(status.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _config_batch_size(run: RunDir) -> float | None:
    try:
        config = run.read_config()
    except Exception:  # noqa: BLE001 - a broken config must not stop the monitor
        return None
    for key in ("global_batch_size", "batch_size"):
        value = config.get(key) if isinstance(config, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


class MonitorSession:
    """The open state of one monitored run: sources, a tracker, followers.

    Args:
        request: What to monitor.
        clock: Returns the current UNIX time (tests pass a fake one).
        follow: Prepare to follow (tolerates empty files and logs without progress yet).

    Raises:
        InputError: Missing, unreadable, empty or binary input; or, without ``follow``, no progress found.
    """

    def __init__(self, request: MonitorRequest, *, clock: Clock = time.time, follow: bool = False) -> None:
        self.request = request
        self.clock = clock
        self.following = follow
        path, self.notes = pick_path(request.paths)
        self.path = path
        if not path.exists():
            raise InputError(
                f"not found: {path}", "pass a training log or a vggtctl run directory (ls the outputs folder)"
            )
        self.run: RunDir | None = None
        if path.is_dir():
            if not layout.is_run_dir(path):
                logs = sorted(path.glob("*.log"), key=lambda p: p.stat().st_mtime)[-3:]
                hint = (
                    f"point at a log file, e.g. vggtctl monitor {logs[-1]}"
                    if logs
                    else "point at a training log file or a directory created by a vggtctl training command"
                )
                raise InputError(
                    f"not a vggtctl run directory (no {layout.STATUS}, {layout.METRICS} or {layout.LOGS}/): {path}",
                    hint,
                )
            self.run = RunDir.open(path)
        self.tracker = Tracker(request.window, history=request.plot is not None)
        self.plot_tracker: Tracker | None = None
        self.sources: dict[Path, _Source] = {}
        self._nvml: NvmlSession | None = None
        self._discover()
        if not follow and not self.tracker.main_series() and self.tracker.metrics_rank() is None:
            raise self._no_progress_error()

    # -- reading -------------------------------------------------------------------------------------------
    def _discover(self) -> None:
        """Open sources not seen yet (a run directory gains rank logs as ranks start)."""
        wanted: list[tuple[Path, str, int | None]] = []
        if self.run is None:
            kind = "jsonl" if self.path.suffix == ".jsonl" else "log"
            wanted.append((self.path, kind, 0 if kind == "jsonl" else None))
        else:
            if self.run.metrics_path.exists():
                wanted.append((self.run.metrics_path, "jsonl", 0))
                self.tracker.ignore_log_metrics = True
            wanted.extend((p, "log", rank) for rank, p in self.run.rank_logs().items())
        for p, kind, rank in wanted:
            if p not in self.sources:
                src = _Source(p, kind, rank, LogParser(rank))
                self.sources[p] = src
                self._initial_scan(src)

    def _initial_scan(self, src: _Source) -> None:
        st = check_log_file(src.path, allow_empty=self.following or self.run is not None)
        src.size = st.st_size
        with open(src.path, "rb") as f:
            start = max(0, src.size - BLOCK)
            f.seek(start)
            # Read only up to the size stat() saw: a writer may append meanwhile, and offsets must agree.
            last = f.read(src.size - start)
            end = start + last_terminator(last)
            partial = last[last_terminator(last) :]
            if src.size <= self.request.full_read_bytes:
                src.read_whole = True
                for chunk in iter_chunks_forward(f, 0, end):
                    src.scanned += len(chunk)
                    self.tracker.feed(src.parse(chunk), st.st_mtime)
            else:
                self._tail_first(src, f, end, st.st_mtime)
        if looks_complete(partial):
            src.scanned += len(partial)
            self.tracker.feed(src.parse(partial), st.st_mtime)
        if self.following:
            src.tail = FileTail(src.path, end)

    def _tail_first(self, src: _Source, f: BinaryIO, end: int, mtime: float) -> None:
        budget = _TailBudget(
            self.request.window, want_losses=not (self.run is not None and src.kind == "log")
        )
        blocks: list[list[Event]] = []
        reached_start = True
        for data in iter_blocks_backward(f, end):
            events = src.parse(data)
            blocks.append(events)
            src.scanned += len(data)
            if budget.add(events, len(data)):
                reached_start = src.scanned >= end
                break
        tail = [ev for events in reversed(blocks) for ev in events]
        src.bars_per_byte = sum(isinstance(ev, StepEvent) and ev.source == "tqdm" for ev in tail) / max(
            src.scanned, 1
        )
        self.tracker.feed(tail, mtime)
        if not reached_start:
            self._anchor_from_head(src, f, end - src.scanned)

    def _anchor_from_head(self, src: _Source, f: BinaryIO, limit: int) -> None:
        """First sample of each series (and DeepSpeed's batch size) from the start of the file."""
        mains = self.tracker.main_series()
        firsts: dict[tuple[int | None, SeriesKey], StepEvent] = {}
        for chunk in iter_chunks_forward(f, 0, min(limit, HEAD_BYTES), chunk=FIRST_BLOCK, growing=True):
            for ev in src.parse(chunk):
                if isinstance(ev, StepEvent):
                    firsts.setdefault((ev.rank, (ev.source, ev.total if ev.source == "tqdm" else None)), ev)
                elif isinstance(ev, NoteEvent) and ev.kind == "batch_size":
                    self.tracker.feed([ev])
            if all((rank, s.key) in firsts for rank, s in mains.items()):
                break
        for rank, series in mains.items():
            first = firsts.get((rank, series.key))
            if first is not None:
                series.anchor(first.step, first.time)

    def history(self) -> Tracker:
        """A tracker that saw the whole run, for plots: the session's own when every file was read whole,
        else one fed by a forward pass that reads every n-th tqdm bar (n from the bar density seen at the
        tail, aiming at ``PLOT_BARS`` bars) and every other line."""
        if all(src.read_whole for src in self.sources.values()):
            return self.tracker
        if self.plot_tracker is None:
            tracker = Tracker(
                self.request.window, history=True, ignore_log_metrics=self.tracker.ignore_log_metrics
            )
            for src in self.sources.values():
                stride = max(1, int(src.bars_per_byte * src.size // PLOT_BARS))
                thinned = _Source(src.path, src.kind, src.rank, LogParser(src.rank, bar_stride=stride))
                with open(src.path, "rb") as f:
                    for chunk in iter_chunks_forward(f):
                        tracker.feed(thinned.parse(chunk))
            self.plot_tracker = tracker
        return self.plot_tracker

    def poll(self) -> None:
        """Read what was appended since the last poll (follow mode)."""
        now = self.clock()
        if self.run is not None:
            self._discover()
        for src in self.sources.values():
            if src.tail is None:
                continue
            lines, partial, truncated = src.tail.poll()
            src.scanned += len(lines)
            for data in (lines, partial):  # the partial comes back whole later: counted then
                if data:
                    self.tracker.feed(src.parse(data), now)
            src.size = src.tail.offset if truncated else max(src.size, src.tail.offset)

    # -- answers -------------------------------------------------------------------------------------------
    def _no_progress_error(self) -> InputError:
        scanned = sum(s.scanned for s in self.sources.values())
        if self.run is not None and not self.sources:
            return InputError(
                f"run directory has no {layout.METRICS} and no {layout.LOGS}/rank*.log yet: {self.path}",
                f"wait for the first steps: vggtctl monitor {self.path} --follow",
            )
        target = next(iter(self.sources.values())).path if len(self.sources) == 1 else self.path
        sample = sample_line(target) if target.is_file() else ""
        return InputError(
            f"no training progress found in {target} (read {scanned} bytes); formats tried: "
            + "; ".join(FORMATS_TRIED)
            + (f"; last line: {sample!r}" if sample else ""),
            "point at the trainer's own log (its redirected stdout/stderr) or a vggtctl run directory; "
            "formats are listed in docs/monitor.md",
        )

    def summary(self) -> MonitorSummary:
        """The current summary (the stall verdict uses the session's clock)."""
        status = None
        notes = list(self.notes)
        if self.run is not None:
            try:
                status = self.run.read_status()
            except InputError as e:
                notes.append(e.message)
        batch = self.request.batch_size or (_config_batch_size(self.run) if self.run else None)
        formats: set[str] = set()
        for src in self.sources.values():
            formats |= src.formats()
            if src.bad_lines:
                notes.append(f"{src.bad_lines} line(s) of {src.path.name} are not metric records (skipped)")
            if src.tail is not None and (src.tail.truncations or src.tail.rotations):
                notes.append(
                    f"{src.path.name} was rotated {src.tail.rotations} and truncated {src.tail.truncations} "
                    "time(s) while followed"
                )
        s = build_summary(
            self.tracker,
            now=self.clock(),
            path=str(self.path),
            kind="run" if self.run is not None else "log",
            formats=sorted(formats),
            scanned_bytes=sum(src.scanned for src in self.sources.values()),
            file_bytes=sum(src.size for src in self.sources.values()),
            stall_after=self.request.stall_after,
            batch_size=batch,
            status_state=status.state if status else None,
            status_message=status.message if status else None,
            status_total=status.total_steps if status else None,
            process_alive=process_alive(status),
        )
        s.notes = notes + s.notes
        if self.request.gpu:
            if self._nvml is None:
                self._nvml = NvmlSession().__enter__()
            s.gpu = self._nvml.query()
            s.notes += gpu_notes(s.gpu, s.state)
        return s

    def close(self) -> None:
        for src in self.sources.values():
            if src.tail is not None:
                src.tail.close()
        if self._nvml is not None:
            self._nvml.__exit__(None, None, None)
            self._nvml = None

    def __enter__(self) -> MonitorSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def summarize(request: MonitorRequest, *, clock: Clock = time.time) -> MonitorSummary:
    """One summary of a run directory or log (and the plot, when asked).

    Args:
        request: What to read.
        clock: Current time source for the stall verdict.

    Returns:
        The summary.

    Raises:
        InputError: Bad input or no recognisable progress.
    """
    with MonitorSession(request, clock=clock) as session:
        summary = session.summary()
        if request.plot is not None:
            from vggtctl.services.monitor.plot import plot_session

            plot_session(session.history(), summary, request.plot)
        return summary


def follow(
    request: MonitorRequest,
    *,
    interval: float,
    on_update: Callable[[MonitorSummary], None],
    exit_on_stall: bool = False,
    clock: Clock = time.time,
    sleep: Callable[[float], None] = time.sleep,
    should_stop: Callable[[], bool] | None = None,
) -> FollowResult:
    """Follow a run or log, calling ``on_update`` with a fresh summary every ``interval`` seconds.

    Ends when ``should_stop()`` says so, on a stall (or failure) with ``exit_on_stall``, or when a run
    directory's status turns finished or failed. KeyboardInterrupt propagates to the caller.

    Args:
        request: What to follow.
        interval: Seconds between refreshes.
        on_update: Receives each summary.
        exit_on_stall: Return as soon as the state is stalled, failed or exited.
        clock: Current time source.
        sleep: Waits between polls (tests pass one that advances a fake clock).
        should_stop: Polled after each update.

    Returns:
        The last summary and why following ended.
    """
    with MonitorSession(request, clock=clock, follow=True) as session:
        while True:
            session.poll()
            summary = session.summary()
            on_update(summary)
            if exit_on_stall and summary.state in STOPPED_STATES:
                return FollowResult(summary, "stalled")
            if session.run is not None and summary.state in ("finished", "failed"):
                return FollowResult(summary, summary.state)
            if should_stop is not None and should_stop():
                return FollowResult(summary, "stopped")
            sleep(interval)
