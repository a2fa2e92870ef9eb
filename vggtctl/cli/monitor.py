"""`vggtctl monitor`: is a training run alive, how fast, when will it finish, is the loss sane."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vggtctl.cli.errors import mapped_errors
from vggtctl.cli.options import JsonOption
from vggtctl.cli.output import Output
from vggtctl.errors import EXIT_STALL, Problem, UsageError, raise_problems

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from vggtctl.services.monitor.summary import MonitorSummary

EPILOG = """\
Examples:

  vggtctl monitor outputs/train_20260126_190044.log

  vggtctl monitor runs/lora-eth3d --follow --gpu

  vggtctl monitor outputs/train_*.log --json --exit-on-stall --stall-after 600

  vggtctl monitor runs/lora-eth3d --plot progress.png --tensorboard
"""

_STATE_STYLE = {
    "running": "green",
    "finished": "green",
    "stalled": "bold red",
    "failed": "bold red",
    "exited": "bold red",
    "waiting": "yellow",
    "unknown": "yellow",
}


def duration(seconds: float | None) -> str:
    """``3d 04h 05m``, ``2h 05m``, ``5m 23s`` or ``12.3s``."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d {h:02d}h {m:02d}m"
    if h:
        return f"{h}h {m:02d}m"
    return f"{m}m {s:02d}s"


def _num(x: float | None, fmt: str = ".4g") -> str:
    return "-" if x is None else format(x, fmt)


def _speed(stats: Any) -> str:
    if stats is None:
        return "-"
    steps = 1.0 / stats.median if stats.median > 0 else float("inf")
    return (
        f"{stats.median:.4g} s/it = {steps:.4g} steps/s (median of {stats.count}; "
        f"p10-p90 {stats.p10:.4g}-{stats.p90:.4g} s/it; mean {stats.mean:.4g})"
    )


def _local(iso: str | None, seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if iso is None:
        return duration(seconds)
    return (
        f"{duration(seconds)} (at {time.strftime('%Y-%m-%d %H:%M', time.localtime(time.time() + seconds))})"
    )


def summary_table(s: MonitorSummary) -> RenderableType:
    """The human view of a summary (also the body of the live ``--follow`` view)."""
    from rich.table import Table
    from rich.text import Text

    title = Text(f"{s.path}  ({', '.join(s.formats) or 'no format recognised yet'})", style="bold")
    table = Table(show_header=False, box=None, pad_edge=False, title=title, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column()

    def add(label: str, value: str | Text) -> None:
        # Plain Text cells: paths and log excerpts may hold [brackets] that Rich would read as markup.
        table.add_row(label, value if isinstance(value, Text) else Text(value))

    state = Text(s.state, style=_STATE_STYLE.get(s.state, ""))
    if s.state_reason:
        state.append(f"  {s.state_reason}")
    add("state", state)
    if s.stall.last_progress_age_s is not None:
        limit = f"; stall after {duration(s.stall.threshold_s)}" if s.stall.threshold_s is not None else ""
        add("last progress", f"{duration(s.stall.last_progress_age_s)} ago{limit}")
    if s.step is not None:
        total = f" / {s.total_steps:,}" if s.total_steps else ""
        pct = f" ({s.progress_pct:.2f}%)" if s.progress_pct is not None else ""
        add("step", f"{s.step:,}{total}{pct}")
    add(f"speed (last {s.window})", _speed(s.recent))
    add("speed (overall)", _speed(s.overall))
    if s.samples_per_s is not None:
        add("samples/s", f"{s.samples_per_s:.4g} ({s.samples_from})")
    add("elapsed", duration(s.elapsed_s))
    add("ETA", _local(s.eta_at, s.eta_s))
    if s.loss is not None:
        l_ = s.loss
        trend = f"; {l_.trend} ({l_.trend_pct:+.1f}% over the window)" if l_.trend else ""
        add("loss", f"{_num(l_.last)} last; {_num(l_.moving_avg)} mean of last {l_.window}{trend}")
        if l_.nonfinite:
            add("NaN/inf loss", Text(f"{l_.nonfinite} (first at step {l_.first_nonfinite_step})", "red"))
    if s.lr is not None:
        add("learning rate", f"{s.lr:.3g}")
    if s.grad_norm is not None:
        add("grad norm", _num(s.grad_norm))
    if s.data_wait_share is not None:
        add("data wait", f"{100 * s.data_wait_share:.1f}% of step time")
    if s.restarts:
        last = s.restart_log[-1] if s.restart_log else None
        add("restarts", f"{s.restarts}" + (f" (last: {last.from_step} -> {last.to_step})" if last else ""))
    if s.slowest_rank is not None:
        others = ", ".join(f"{r.rank}: {_num(r.s_per_it)}" for r in s.ranks)
        add("ranks", f"slowest is rank {s.slowest_rank} (s/it by rank: {others})")
    if s.error:
        add("error", Text(s.error, "red"))
    if s.gpu is not None:
        if s.gpu.available:
            for g in s.gpu.gpus:
                util = f", {g.utilization_pct:.0f}% busy" if g.utilization_pct is not None else ""
                add(
                    f"GPU {g.index}",
                    f"{g.memory_used_mb:,.0f} / {g.memory_total_mb:,.0f} MiB{util} ({g.name})",
                )
        else:
            add("GPU", "-")
    for note in s.notes:
        add("note", note)
    return table


def status_line(s: MonitorSummary) -> str:
    """One line per refresh when ``--follow`` output is not a terminal (like the old monitor script)."""
    parts = [s.state]
    if s.step is not None:
        parts.append(f"step {s.step}" + (f"/{s.total_steps}" if s.total_steps else ""))
    if s.recent is not None:
        parts.append(
            f"{s.recent.median:.4g} s/it ({1 / s.recent.median if s.recent.median else 0:.4g} steps/s)"
        )
    if s.eta_s:
        parts.append(f"ETA {duration(s.eta_s)}")
    if s.loss is not None and s.loss.moving_avg is not None:
        parts.append(f"loss {s.loss.moving_avg:.4g}")
    if s.gpu is not None and s.gpu.available:
        parts.append("GPU MiB " + " ".join(f"{g.memory_used_mb:.0f}" for g in s.gpu.gpus))
    return time.strftime("[%Y-%m-%d %H:%M:%S] ") + " | ".join(parts)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _check(
    window: int, interval: float, stall_after: float | None, batch_size: int | None, plot: Path | None
) -> None:
    """Every bad option at once, before any log is read."""
    from vggtctl.paths import output_file_problem

    problems: list[Problem] = []
    if window < 2:
        problems.append(Problem.of("window", "at least 2", window))
    if not interval > 0:
        problems.append(Problem.of("interval", "must be > 0 seconds", interval))
    if stall_after is not None and not stall_after > 0:
        problems.append(Problem.of("stall_after", "must be > 0 seconds", stall_after))
    if batch_size is not None and batch_size <= 0:
        problems.append(Problem.of("batch_size", "must be > 0", batch_size))
    if plot is not None:
        from vggtctl.services.monitor.plot import PLOT_SUFFIXES

        if plot.suffix.lower() not in PLOT_SUFFIXES:
            problems.append(Problem.of("plot", "must end in .png or .html", str(plot)))
        path_problem = output_file_problem("plot", plot)
        if path_problem is not None:
            problems.append(path_problem)
    raise_problems("monitor options", problems, "e.g. --window 20 --interval 2 --plot progress.png")


def _follow(
    output: Output, request: Any, interval: float, exit_on_stall: bool
) -> tuple[MonitorSummary | None, str, bool]:
    """Run the follow loop with a live view (TTY), a line per change (pipe) or nothing (JSON)."""
    from rich.live import Live

    from vggtctl.services.monitor import follow

    last: list[MonitorSummary] = []
    console: Console = output.out
    live = Live(console=console, auto_refresh=False) if not output.json_mode and console.is_terminal else None
    printed = [""]

    def on_update(summary: MonitorSummary) -> None:
        last[:] = [summary]
        if output.json_mode:
            return
        if live is not None:
            live.update(summary_table(summary), refresh=True)
            return
        line = status_line(summary)
        if line.split("] ", 1)[-1] != printed[0]:
            printed[0] = line.split("] ", 1)[-1]
            console.print(line, markup=False, highlight=False)

    try:
        if live is not None:
            live.start()
        result = follow(request, interval=interval, on_update=on_update, exit_on_stall=exit_on_stall)
        return result.summary, result.reason, live is not None
    except KeyboardInterrupt:
        # Ctrl-C is how one stops watching: not an error.
        return (last[0] if last else None), "stopped", live is not None
    finally:
        if live is not None:
            live.stop()


@mapped_errors
def monitor_command(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="A vggtctl run directory or a training log (HF Trainer, DeepSpeed, torchrun, vggtctl). "
            "Several files (a shell glob): the newest is read.",
            show_default=False,
            readable=False,  # the service says "permission denied" with a hint (exit 1), not Typer
        ),
    ],
    follow_: Annotated[
        bool, typer.Option("--follow", "-f", help="Live view, refreshed every --interval s; Ctrl-C exits 0.")
    ] = False,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between --follow refreshes.")] = 2.0,
    window: Annotated[int, typer.Option("--window", help="Recent updates behind the 'last N' figures.")] = 20,
    json_out: JsonOption = False,
    gpu: Annotated[
        bool, typer.Option("--gpu", help="GPU memory and utilisation of this machine (NVML).")
    ] = False,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write loss and s/it over steps to a .png or .html file.")
    ] = None,
    tensorboard: Annotated[
        bool, typer.Option("--tensorboard", help="Serve the run's event files (needs vggtctl\\[train]).")
    ] = False,
    host: Annotated[str, typer.Option("--host", help="Address TensorBoard binds.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TensorBoard port.")] = 6006,
    stall_after: Annotated[
        float | None,
        typer.Option(
            "--stall-after",
            help="Seconds without progress that count as a stall \\[default: 5x the median update gap].",
        ),
    ] = None,
    exit_on_stall: Annotated[
        bool,
        typer.Option(
            "--exit-on-stall", help="Exit with code 3 when stalled, failed or exited (for schedulers)."
        ),
    ] = False,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Samples per optimizer step, for samples/s.")
    ] = None,
) -> None:
    """Summarise or follow a training run: step, s/it, ETA, loss, stalls, GPUs."""
    from vggtctl.services.monitor import STOPPED_STATES, MonitorRequest, summarize

    _check(window, interval, stall_after, batch_size, plot)
    if follow_ and plot is not None:
        raise UsageError(
            "--plot reads the whole run once; it does not combine with --follow", "drop one of them"
        )
    request = MonitorRequest(
        paths=list(paths),
        window=window,
        stall_after=stall_after,
        batch_size=batch_size,
        gpu=gpu,
        plot=plot,
    )
    output = Output(json_mode=json_out)
    server = None
    try:
        if tensorboard:
            from vggtctl.services.monitor.service import pick_path
            from vggtctl.services.monitor.tensorboard import start_tensorboard

            server = start_tensorboard(pick_path(request.paths)[0], host, port)
            # A scheduler's SIGTERM must not leave TensorBoard behind: unwind so `finally` stops it.
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
            output.info(f"TensorBoard serves {server.logdir} at {server.url}")
        if follow_:
            summary, reason, was_live = _follow(output, request, interval, exit_on_stall)
            # The live view already shows the last state; JSON and piped output get the final summary.
            if summary is not None and (output.json_mode or (not was_live and reason != "stopped")):
                output.result(summary.to_dict(), lambda c: c.print(summary_table(summary)))
            if summary is not None and reason == "failed":
                output.warn(f"the run failed: {summary.state_reason}")
            if exit_on_stall and summary is not None and summary.state in STOPPED_STATES:
                raise typer.Exit(EXIT_STALL)
            return
        summary = summarize(request)
        output.result(summary.to_dict(), lambda c: c.print(summary_table(summary)))
        if plot is not None:
            output.info(f"plot written to {plot}")
        if exit_on_stall and summary.state in STOPPED_STATES:
            raise typer.Exit(EXIT_STALL)
        if server is not None:
            output.info("TensorBoard keeps running; Ctrl-C stops it")
            try:
                server.wait()
            except KeyboardInterrupt:
                pass
    finally:
        if server is not None:
            server.stop()
        sys.stdout.flush()


def register(app: typer.Typer) -> None:
    """Add ``monitor`` to the root app."""
    app.command(
        "monitor",
        epilog=EPILOG,
        help="Is a training run alive, how fast, when will it finish, is the loss sane, is the GPU starved.",
    )(monitor_command)
