"""The CLI's output sink: results on stdout (table or ``--json``), everything else on stderr."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress as RichProgressBar,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from vggtctl.cli.state import state
from vggtctl.progress import NULL_PROGRESS, Progress, Task
from vggtctl.utils.atomic import _json_default


def _no_color() -> bool:
    return bool(os.environ.get("NO_COLOR"))


def stderr_console() -> Console:
    return Console(stderr=True, no_color=_no_color(), highlight=False, soft_wrap=True)


def stdout_console() -> Console:
    # Piped output has no terminal width; Rich would assume 80 columns and squeeze tables. Use a
    # wide default there unless COLUMNS says otherwise.
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
    return Console(no_color=_no_color(), highlight=False, soft_wrap=True, width=width)


def is_rank_zero() -> bool:
    """Progress and logs only on rank 0: the same rule as the run directory's writer (vggtctl.runtime.dist)."""
    from vggtctl.runtime.dist import is_rank_zero as _is_rank_zero

    return _is_rank_zero()


class _RichTask:
    def __init__(self, bar: RichProgressBar, task_id: Any) -> None:
        self._bar = bar
        self._id = task_id

    def advance(self, n: float = 1) -> None:
        self._bar.advance(self._id, n)

    def update(
        self, *, completed: float | None = None, total: float | None = None, description: str | None = None
    ) -> None:
        kwargs: dict[str, Any] = {}
        if completed is not None:
            kwargs["completed"] = completed
        if total is not None:
            kwargs["total"] = total
        if description is not None:
            kwargs["description"] = description
        self._bar.update(self._id, **kwargs)

    def close(self) -> None:
        self._bar.update(self._id, visible=False)


class RichProgress:
    """Rich bars on stderr. One bar set for counts, one for bytes (size, speed, ETA)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._counts = RichProgressBar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._bytes = RichProgressBar(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._started: set[int] = set()

    def _bar(self, unit: str) -> RichProgressBar:
        bar = self._bytes if unit == "B" else self._counts
        if id(bar) not in self._started:
            bar.start()
            self._started.add(id(bar))
        return bar

    def task(self, description: str, total: float | None = None, unit: str = "it") -> Task:
        bar = self._bar(unit)
        return _RichTask(bar, bar.add_task(description, total=total))

    def log(self, message: str) -> None:
        self.console.print(message, markup=False)

    def stop(self) -> None:
        for bar in (self._counts, self._bytes):
            if id(bar) in self._started:
                bar.stop()
        self._started.clear()


class _StderrLogOnly:
    """No bars (not a TTY); still shows one-line stage messages unless quiet."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def task(self, description: str, total: float | None = None, unit: str = "it") -> Task:
        return NULL_PROGRESS.task(description, total, unit)

    def log(self, message: str) -> None:
        self.console.print(message, markup=False)


class Output:
    """What a command writes. ``json_mode`` puts exactly one JSON document on stdout."""

    def __init__(self, json_mode: bool = False) -> None:
        self.json_mode = json_mode
        self.quiet = state.quiet
        self.err = stderr_console()
        self.out = stdout_console()
        self._progress: RichProgress | None = None

    def progress(self) -> Progress:
        """A progress reporter suited to this run: bars only on a TTY, rank 0, not quiet/json."""
        if self.quiet or not is_rank_zero():
            return NULL_PROGRESS
        if self.json_mode or not sys.stderr.isatty():
            return _StderrLogOnly(self.err)
        if self._progress is None:
            self._progress = RichProgress(self.err)
        return self._progress

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()

    def info(self, message: str) -> None:
        if not self.quiet:
            self.err.print(message, markup=False)

    def warn(self, message: str) -> None:
        self.err.print(f"Warning: {message}", markup=False, style="yellow")

    def result(self, data: Any, render: Callable[[Console], None] | None = None) -> None:
        """Emit the command's result: JSON on stdout, or the human rendering."""
        self.close()
        if self.json_mode or render is None:
            sys.stdout.write(json.dumps(data, indent=2, default=_json_default) + "\n")
            sys.stdout.flush()
        else:
            render(self.out)
