"""Events → running state, per rank, in bounded memory (windows, a histogram, a few counters).

A rank may report progress through several *series*: tqdm bars (one per ``total``: HF's evaluation bar
is not the training bar), step lines, ``metrics.jsonl``. The main series of a rank is ``metrics.jsonl`` if
present, else the tqdm bar with the largest total, else step lines.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from vggtctl.services.monitor.parse import Event, MetricsEvent, NoteEvent, StepEvent
from vggtctl.services.monitor.stats import LogHistogram, Thinned

SeriesKey = tuple[str, int | None]
_SOURCE_RANK = {"metrics": 2, "tqdm": 1, "log": 0}
MAX_RESTARTS_KEPT = 20


def series_priority(key: SeriesKey, updates: int = 0) -> tuple[int, int, int]:
    """Sort key of a series: a higher value makes a better main series."""
    source, total = key
    return (_SOURCE_RANK.get(source, 0), total or 0, updates)


@dataclass
class Restart:
    """The step went back: a resumed or relaunched run."""

    from_step: int
    to_step: int


class Series:
    """Progress of one bar / source of one rank. ``first_*`` is the start of the current segment (since
    the last restart); ``durations`` holds seconds per step of the last ``window`` updates."""

    def __init__(self, key: SeriesKey, window: int, history: bool = False) -> None:
        self.key = key
        self.first_step: int | None = None
        self.first_time: float | None = None
        self.last_step: int | None = None
        self.last_time: float | None = None
        self.total: int | None = key[1]
        self.wall = False
        self.durations: deque[float] = deque(maxlen=window)
        self.gaps: deque[float] = deque(maxlen=window)
        self.overall = LogHistogram()
        self.updates = 0
        self.restarts = 0
        self.restart_log: deque[Restart] = deque(maxlen=MAX_RESTARTS_KEPT)
        self.observed_at: float | None = None
        self.last_spi: float | None = None
        self.history = Thinned() if history else None

    def add(self, ev: StepEvent, observed_at: float | None) -> None:
        if ev.total is not None:
            self.total = ev.total
        if self.last_step is None:
            self._start(ev, observed_at)
            return
        if ev.step < self.last_step:
            self.restarts += 1
            self.restart_log.append(Restart(self.last_step, ev.step))
            self.durations.clear()
            self.gaps.clear()
            self.overall.clear()
            self.updates = 0
            self._start(ev, observed_at)
            return
        if ev.step == self.last_step:
            # A redraw (tqdm after a print) or a second line about the same step: no progress.
            if self.last_time is None and ev.time is not None:
                self._timed(ev)
            return
        delta = ev.step - self.last_step
        dt = ev.time - self.last_time if ev.time is not None and self.last_time is not None else None
        spi = ev.sec_per_it
        if spi is None and dt is not None and dt >= 0:
            spi = dt / delta
        if spi is not None and spi >= 0 and math.isfinite(spi):
            self.durations.append(spi)
            self.overall.add(spi)
            if self.history is not None:
                self.history.add(ev.step, spi)
            gap = dt if dt is not None and dt >= 0 else spi * delta
            self.gaps.append(gap)
        self.last_spi = spi
        self.last_step = ev.step
        if ev.time is not None:
            self._timed(ev)
        self.observed_at = observed_at
        self.updates += 1

    def _timed(self, ev: StepEvent) -> None:
        self.last_time = ev.time
        if self.first_time is None:
            # The segment's timing starts at the first sample that has a time.
            self.first_time, self.first_step = ev.time, ev.step

    def _start(self, ev: StepEvent, observed_at: float | None) -> None:
        self.first_step = self.last_step = ev.step
        self.first_time = self.last_time = ev.time
        self.wall = ev.wall
        self.observed_at = observed_at
        self.last_spi = ev.sec_per_it

    def anchor(self, step: int, time: float | None) -> None:
        """An earlier sample of the same segment (from the head of a file read tail-first): it makes the
        overall average and elapsed time cover the whole run. Ignored when it cannot be the same segment."""
        if self.first_step is None or step > self.first_step:
            return
        if time is not None and self.first_time is not None and time > self.first_time:
            return
        if self.restarts:
            return
        self.first_step = step
        if time is not None:
            self.first_time = time

    def elapsed(self) -> float | None:
        """Seconds since the segment started: tqdm's own elapsed clock, or last - first timestamp."""
        if self.last_time is None:
            return None
        if not self.wall:
            return self.last_time
        return self.last_time - self.first_time if self.first_time is not None else None

    def overall_mean(self) -> float | None:
        """Average seconds per step over the segment, from its first and last sample."""
        if None in (self.first_time, self.last_time, self.first_step, self.last_step):
            return None
        steps = self.last_step - self.first_step  # type: ignore[operator]
        if steps <= 0:
            return None
        return (self.last_time - self.first_time) / steps  # type: ignore[operator]


class MetricsState:
    """Loss, learning rate, data-wait and throughput of one rank, over the last ``window`` records."""

    def __init__(self, window: int, history: bool = False) -> None:
        self.losses: deque[float] = deque(maxlen=window)
        self.loss_count = 0
        self.last_loss: float | None = None
        self.nonfinite = 0
        self.first_nonfinite_step: int | None = None
        self.last: dict[str, float] = {}
        self.samples: deque[tuple[float, float]] = deque(maxlen=window + 1)
        self.data_wait: deque[tuple[float, float]] = deque(maxlen=window)
        self.history = Thinned() if history else None
        self.sources: set[str] = set()

    def add(self, ev: MetricsEvent, step: int | None, time: float | None, spi: float | None) -> None:
        self.sources.add(ev.source)
        values = ev.values
        loss = values.get("loss")
        if loss is not None:
            self.loss_count += 1
            self.last_loss = loss
            if math.isfinite(loss):
                self.losses.append(loss)
                if self.history is not None and step is not None:
                    self.history.add(step, loss)
            else:
                self.nonfinite += 1
                if self.first_nonfinite_step is None:
                    self.first_nonfinite_step = step
        for key in ("lr", "grad_norm", "epoch", "eval_loss", "batch_size", "samples_per_s"):
            if key in values:
                self.last[key] = values[key]
        if "samples" in values and time is not None:
            self.samples.append((time, values["samples"]))
        if "data_time" in values:
            step_time = values.get("step_time", spi)
            if step_time is not None and step_time > 0:
                self.data_wait.append((values["data_time"], step_time))


@dataclass
class RankState:
    series: dict[SeriesKey, Series] = field(default_factory=dict)
    metrics: MetricsState | None = None
    current: Series | None = None

    def main(self) -> Series | None:
        if not self.series:
            return None
        return max(self.series.values(), key=lambda s: series_priority(s.key, s.updates))


@dataclass
class Failure:
    """An exception printed after the last progress update."""

    text: str
    rank: int | None


class Tracker:
    """Feeds events into per-rank state.

    Args:
        window: Size of the "last N" windows.
        history: Also keep thinned (step, s/it) and (step, loss) series for plots.
        ignore_log_metrics: Drop metric values read from text logs (a run directory's ``metrics.jsonl``
            already has them; counting both would count each loss twice).
    """

    MAX_SERIES_PER_RANK = 8

    def __init__(self, window: int = 20, history: bool = False, ignore_log_metrics: bool = False) -> None:
        self.window = window
        self.history = history
        self.ignore_log_metrics = ignore_log_metrics
        self.ranks: dict[int | None, RankState] = {}
        self.failure: Failure | None = None
        self.finished = False
        self.batch_size: float | None = None
        self.progress_events = 0

    def _rank(self, rank: int | None) -> RankState:
        state = self.ranks.get(rank)
        if state is None:
            state = self.ranks[rank] = RankState()
        return state

    def feed(self, events: list[Event], observed_at: float | None = None) -> None:
        """Apply events in order. ``observed_at`` is when they were seen (for the stall verdict)."""
        for ev in events:
            if isinstance(ev, StepEvent):
                self._step(ev, observed_at)
            elif isinstance(ev, MetricsEvent):
                if self.ignore_log_metrics and ev.source == "log":
                    continue
                rs = self._rank(ev.rank)
                if rs.metrics is None:
                    rs.metrics = MetricsState(self.window, self.history)
                cur = rs.current
                rs.metrics.add(
                    ev,
                    cur.last_step if cur else None,
                    cur.last_time if cur and cur.wall else None,
                    cur.last_spi if cur else None,
                )
            elif isinstance(ev, NoteEvent):
                self._note(ev)

    def _note(self, ev: NoteEvent) -> None:
        if ev.kind == "exception":
            self.failure = Failure(ev.text, ev.rank)
        elif ev.kind == "finished":
            self.finished = True
        elif ev.kind == "batch_size" and ev.value:
            self.batch_size = ev.value

    def _step(self, ev: StepEvent, observed_at: float | None) -> None:
        rs = self._rank(ev.rank)
        key: SeriesKey = (ev.source, ev.total if ev.source == "tqdm" else None)
        series = rs.series.get(key)
        if series is None:
            if len(rs.series) >= self.MAX_SERIES_PER_RANK:
                weakest = min(rs.series.values(), key=lambda s: series_priority(s.key, s.updates))
                del rs.series[weakest.key]
            series = rs.series[key] = Series(key, self.window, self.history)
        before = series.last_step
        series.add(ev, observed_at)
        rs.current = series
        if series.last_step != before:
            self.progress_events += 1
            # Progress after an exception means the run went on (another rank's warning, a retry).
            if self.failure is not None and series is rs.main():
                self.failure = None

    def main_series(self) -> dict[int | None, Series]:
        """The main series of each rank that reported progress."""
        out = {}
        for rank, rs in self.ranks.items():
            m = rs.main()
            if m is not None and m.last_step is not None:
                out[rank] = m
        return out

    def metrics_rank(self) -> MetricsState | None:
        """Metrics of the lowest rank that logged a loss (else any metrics); unknown rank counts first."""
        candidates = [(r if r is not None else -1, rs.metrics) for r, rs in self.ranks.items() if rs.metrics]
        if not candidates:
            return None
        with_loss = [c for c in candidates if c[1].loss_count]
        return min(with_loss or candidates, key=lambda c: c[0])[1]
