"""Loss and seconds-per-step over steps, as a PNG or a self-contained HTML page (inline SVG)."""

from __future__ import annotations

import html
import io
from dataclasses import dataclass
from pathlib import Path

from vggtctl.errors import UsageError
from vggtctl.services.monitor.run_state import Tracker
from vggtctl.services.monitor.summary import MonitorSummary
from vggtctl.utils.atomic import atomic_write_bytes, atomic_write_text

PLOT_SUFFIXES = (".png", ".html", ".htm")


@dataclass
class PlotData:
    """What a plot shows: (step, s/it) and (step, loss) points, already thinned."""

    title: str
    speed: list[tuple[float, float]]
    loss: list[tuple[float, float]]
    facts: list[tuple[str, str]]


def check_plot_path(path: Path) -> None:
    """Raise UsageError unless ``path`` ends in .png or .html."""
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise UsageError(
            f"--plot must end in .png or .html, got {path.name!r}",
            f"e.g. --plot {path.with_suffix('.png').name}",
        )


def plot_data(tracker: Tracker, summary: MonitorSummary) -> PlotData:
    """The points of the slowest rank's main series and of the logged losses."""
    mains = tracker.main_series()
    series = mains.get(summary.slowest_rank) or next(iter(mains.values()), None)
    speed = series.history.points if series is not None and series.history is not None else []
    metrics = tracker.metrics_rank()
    loss = metrics.history.points if metrics is not None and metrics.history is not None else []
    facts = [("state", summary.state)]
    if summary.step is not None:
        facts.append(
            ("step", f"{summary.step}" + (f" / {summary.total_steps}" if summary.total_steps else ""))
        )
    if summary.recent is not None:
        facts.append(("s/it (median, last updates)", f"{summary.recent.median:.4g}"))
    if summary.loss is not None and summary.loss.moving_avg is not None:
        facts.append(("loss (moving average)", f"{summary.loss.moving_avg:.4g}"))
    return PlotData(summary.path, list(speed), list(loss), facts)


def render(data: PlotData, fmt: str) -> bytes:
    """Draw the two panels with matplotlib's object API (no pyplot: no global backend is touched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6), layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_speed = fig.subplots(2, 1, sharex=True)
    for ax, points, label, color in (
        (ax_loss, data.loss, "loss", "tab:blue"),
        (ax_speed, data.speed, "s/it", "tab:orange"),
    ):
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, color=color, linewidth=1)
        else:
            ax.text(0.5, 0.5, f"no {label} in the log", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    ax_speed.set_xlabel("step")
    fig.suptitle(data.title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=100)
    return buf.getvalue()


def write_plot(data: PlotData, out: Path) -> Path:
    """Write ``data`` to ``out`` (.png, or .html with the SVG inline), atomically."""
    check_plot_path(out)
    if out.suffix.lower() == ".png":
        atomic_write_bytes(out, render(data, "png"))
        return out
    svg = render(data, "svg").decode("utf-8")
    svg = svg[svg.find("<svg") :]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in data.facts)
    page = (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>vggtctl monitor: {html.escape(data.title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}th{text-align:left;padding-right:1em}</style>"
        f"</head><body><h1>{html.escape(data.title)}</h1><table>{rows}</table>{svg}</body></html>\n"
    )
    atomic_write_text(out, page)
    return out


def plot_session(tracker: Tracker, summary: MonitorSummary, out: Path) -> Path:
    """Plot what a full read of the run collected."""
    return write_plot(plot_data(tracker, summary), out)
