"""Tracker state → the monitor's answer: state, speed, ETA, loss, stall verdict (clock passed in)."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

from vggtctl.runtime.gpu import GpuReport
from vggtctl.services.monitor.run_state import Restart, Series, Tracker
from vggtctl.services.monitor.stats import RateStats, linear_slope, quantile

STALL_FACTOR = 5.0
MIN_STALL_S = 10.0
TREND_PCT = 5.0
DATA_WAIT_NOTE = 0.3
LOW_GPU_UTIL = 30.0


@dataclass
class LossStats:
    """Training loss over the last ``window`` finite values.

    ``trend`` is ``falling``/``flat``/``rising``: the least-squares line through the window changes by
    ``trend_pct`` percent of the moving average from its first to its last point (±5 % is flat).
    """

    last: float | None
    moving_avg: float | None
    window: int
    trend: str | None
    trend_pct: float | None
    count: int
    nonfinite: int
    first_nonfinite_step: int | None


@dataclass
class StallVerdict:
    """``stalled`` is None when there is no threshold (no timing in the log and no ``--stall-after``)."""

    stalled: bool | None
    last_progress_age_s: float | None
    threshold_s: float | None
    threshold_from: str | None


@dataclass
class RankSummary:
    rank: int | None
    step: int
    total_steps: int | None
    s_per_it: float | None
    source: str


@dataclass
class MonitorSummary:
    """Everything ``vggtctl monitor`` reports. ``recent`` covers the last ``window`` updates, ``overall`` the
    current segment (since the last restart) as far as it was read; ``overall.mean`` is first-to-last."""

    path: str
    kind: str
    formats: list[str]
    state: str
    state_reason: str | None
    step: int | None
    total_steps: int | None
    progress_pct: float | None
    recent: RateStats | None
    overall: RateStats | None
    samples_per_s: float | None
    samples_from: str | None
    elapsed_s: float | None
    eta_s: float | None
    eta_at: str | None
    loss: LossStats | None
    lr: float | None
    grad_norm: float | None
    epoch: float | None
    data_wait_share: float | None
    restarts: int
    restart_log: list[Restart]
    stall: StallVerdict
    ranks: list[RankSummary]
    slowest_rank: int | None
    error: str | None
    window: int
    scanned_bytes: int
    file_bytes: int
    gpu: GpuReport | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["recent"] = self.recent.to_dict() if self.recent else None
        d["overall"] = self.overall.to_dict() if self.overall else None
        return _finite(d)


def _finite(obj: Any) -> Any:
    # JSON has no NaN: a NaN loss is reported as the string "nan" (and counted in loss.nonfinite).
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def iso_utc(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def _median(values: Any) -> float | None:
    return quantile(list(values), 0.5) if values else None


def loss_stats(
    losses: list[float], count: int, last: float | None, nonfinite: int, first_bad: int | None
) -> LossStats:
    """Moving average and trend of the last losses (see :class:`LossStats`)."""
    avg = math.fsum(losses) / len(losses) if losses else None
    trend = pct = None
    if len(losses) >= 3 and avg:
        pct = 100.0 * linear_slope(losses) * (len(losses) - 1) / abs(avg)
        trend = "falling" if pct < -TREND_PCT else "rising" if pct > TREND_PCT else "flat"
    return LossStats(last, avg, len(losses), trend, pct, count, nonfinite, first_bad)


def _stall(
    mains: dict[int | None, Series], slowest: Series | None, now: float, stall_after: float | None
) -> StallVerdict:
    observed = [s.observed_at for s in mains.values() if s.observed_at is not None]
    age = max(0.0, now - max(observed)) if observed else None
    if stall_after is not None:
        threshold, source = stall_after, "--stall-after"
    else:
        gap = _median(slowest.gaps) if slowest else None
        if gap is None:
            threshold, source = None, None
        else:
            threshold = max(STALL_FACTOR * gap, MIN_STALL_S)
            source = f"{STALL_FACTOR:g}x the median time between updates (at least {MIN_STALL_S:g} s)"
    stalled = None if threshold is None or age is None else age > threshold
    return StallVerdict(stalled, age, threshold, source)


def build_summary(
    tracker: Tracker,
    *,
    now: float,
    path: str,
    kind: str,
    formats: list[str],
    scanned_bytes: int,
    file_bytes: int,
    stall_after: float | None = None,
    batch_size: float | None = None,
    status_state: str | None = None,
    status_message: str | None = None,
    status_total: int | None = None,
    process_alive: bool | None = None,
) -> MonitorSummary:
    """Summarise a tracker at time ``now`` (UNIX seconds, from the caller's clock).

    Args:
        tracker: Fed with the run's events.
        now: Current time; the stall verdict compares it with when progress was last seen.
        path: What was read (for the report).
        kind: ``run`` (a run directory) or ``log``.
        formats: Formats recognised.
        scanned_bytes: Bytes read (tail-first reads stop early).
        file_bytes: Size of what was read from.
        stall_after: Seconds without progress that make a stall (default: from the log's own pace).
        batch_size: Samples per step, when the caller knows it.
        status_state: ``status.json``'s state of a run directory.
        status_message: ``status.json``'s message.
        status_total: ``status.json``'s total_steps.
        process_alive: Whether the run's process still exists (None: cannot tell).
    """
    mains = tracker.main_series()
    ranks = [
        RankSummary(r, s.last_step, s.total, _median(s.durations), s.key[0])  # type: ignore[arg-type]
        for r, s in sorted(mains.items(), key=lambda kv: -1 if kv[0] is None else kv[0])
    ]
    slowest_rank: int | None = None
    slowest: Series | None = None
    if mains:
        slowest_rank, slowest = max(
            mains.items(), key=lambda kv: (_median(kv[1].durations) or -1.0, -(kv[1].last_step or 0))
        )
    step = slowest.last_step if slowest else None
    total = (slowest.total if slowest else None) or status_total
    recent = RateStats.of(list(slowest.durations)) if slowest else None
    overall = slowest.overall.stats() if slowest else None
    if overall is not None and slowest is not None:
        mean = slowest.overall_mean()
        if mean is not None:
            overall.mean = mean
    elapsed = slowest.elapsed() if slowest else None

    stall = _stall(mains, slowest, now, stall_after)
    ms = tracker.metrics_rank()
    loss = None
    lr = grad_norm = epoch = None
    data_wait = None
    samples_per_s = samples_from = None
    if ms is not None:
        if ms.loss_count:
            loss = loss_stats(
                list(ms.losses), ms.loss_count, ms.last_loss, ms.nonfinite, ms.first_nonfinite_step
            )
        lr, grad_norm, epoch = ms.last.get("lr"), ms.last.get("grad_norm"), ms.last.get("epoch")
        if ms.data_wait:
            wait = math.fsum(d for d, _ in ms.data_wait)
            whole = math.fsum(s for _, s in ms.data_wait)
            data_wait = wait / whole if whole > 0 else None
        if len(ms.samples) >= 2 and ms.samples[-1][0] > ms.samples[0][0]:
            (t0, s0), (t1, s1) = ms.samples[0], ms.samples[-1]
            samples_per_s, samples_from = (s1 - s0) / (t1 - t0), "logged samples"
        batch_size = batch_size or ms.last.get("batch_size")
    batch_size = batch_size or tracker.batch_size
    if samples_per_s is None and batch_size and recent and recent.median > 0:
        samples_per_s, samples_from = batch_size / recent.median, f"batch size {batch_size:g} x steps/s"
    if samples_per_s is None and ms is not None and "samples_per_s" in ms.last:
        samples_per_s, samples_from = ms.last["samples_per_s"], "logged samples/s"

    eta = eta_at = None
    progress_pct = None
    if total and step is not None:
        progress_pct = 100.0 * step / total
        if recent and step < total:
            eta = (total - step) * recent.median
            eta_at = iso_utc(now + eta)
        elif step >= total:
            eta = 0.0

    state, reason = _state(tracker, status_state, status_message, process_alive, stall, step, total)
    restarts = slowest.restarts if slowest else 0
    summary = MonitorSummary(
        path=path,
        kind=kind,
        formats=sorted(formats),
        state=state,
        state_reason=reason,
        step=step,
        total_steps=total,
        progress_pct=progress_pct,
        recent=recent,
        overall=overall,
        samples_per_s=samples_per_s,
        samples_from=samples_from,
        elapsed_s=elapsed,
        eta_s=eta,
        eta_at=eta_at,
        loss=loss,
        lr=lr,
        grad_norm=grad_norm,
        epoch=epoch,
        data_wait_share=data_wait,
        restarts=restarts,
        restart_log=list(slowest.restart_log) if slowest else [],
        stall=stall,
        ranks=ranks,
        slowest_rank=slowest_rank if len(mains) > 1 else None,
        error=tracker.failure.text if tracker.failure else None,
        window=tracker.window,
        scanned_bytes=scanned_bytes,
        file_bytes=file_bytes,
    )
    summary.notes = _notes(summary)
    return summary


def _state(
    tracker: Tracker,
    status_state: str | None,
    status_message: str | None,
    process_alive: bool | None,
    stall: StallVerdict,
    step: int | None,
    total: int | None,
) -> tuple[str, str | None]:
    if status_state == "failed":
        return "failed", status_message or "status.json says failed"
    if status_state == "finished":
        return "finished", status_message
    if tracker.finished:
        return "finished", "the trainer printed its final train_runtime summary"
    if total and step is not None and step >= total:
        return "finished", f"step {step} of {total}"
    if tracker.failure is not None:
        where = f" on rank {tracker.failure.rank}" if tracker.failure.rank is not None else ""
        return "failed", f"exception after the last progress{where}: {tracker.failure.text}"
    if process_alive is False:
        return "exited", "status.json says running but its process is gone"
    if step is None:
        return "waiting", "no progress line yet"
    if stall.stalled:
        return (
            "stalled",
            f"no progress for {stall.last_progress_age_s:.0f} s (threshold {stall.threshold_s:.0f} s)",
        )
    if stall.stalled is False:
        return "running", None
    return "unknown", "the log has no timing to judge a stall by; pass --stall-after"


def _notes(s: MonitorSummary) -> list[str]:
    notes = []
    if s.data_wait_share is not None and s.data_wait_share >= DATA_WAIT_NOTE:
        notes.append(
            f"data loading takes {100 * s.data_wait_share:.0f}% of each step: the GPU waits for input "
            "(more DataLoader workers, pin_memory, or cached features)"
        )
    if s.scanned_bytes < s.file_bytes:
        notes.append(
            f"read the last {s.scanned_bytes / 2**20:.1f} MiB of {s.file_bytes / 2**20:.1f} MiB (tail-first); "
            "overall median and spread cover that part"
        )
    return notes


def gpu_notes(report: GpuReport, state: str) -> list[str]:
    """Advice from a GPU report: idle GPUs while the run is running mean the input pipeline is the bottleneck."""
    if not report.available:
        return [report.note] if report.note else []
    utils = [g.utilization_pct for g in report.gpus if g.utilization_pct is not None]
    if state == "running" and utils and max(utils) < LOW_GPU_UTIL:
        return [
            f"GPU utilisation is at most {max(utils):.0f}%: the GPUs are starved (data loading, CPU work or "
            "synchronisation is the bottleneck, not GPU compute)"
        ]
    return []
