"""Progress reporting for services.

Services never print. Long work takes a ``progress: Progress`` argument (default ``NULL_PROGRESS``)
and reports through it; the CLI passes a Rich implementation that draws on stderr only when it
should (TTY, rank 0, not ``--quiet``/``--json``).
"""

from __future__ import annotations

from typing import Protocol


class Task(Protocol):
    def advance(self, n: float = 1) -> None: ...

    def update(
        self, *, completed: float | None = None, total: float | None = None, description: str | None = None
    ) -> None: ...

    def close(self) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: float | None = None, unit: str = "it") -> Task:
        """Start a task. ``unit="B"`` asks for byte/speed/ETA columns."""
        ...

    def log(self, message: str) -> None:
        """A one-line status message (stage timings, warnings) for stderr."""
        ...


class _NullTask:
    def advance(self, n: float = 1) -> None:
        pass

    def update(
        self, *, completed: float | None = None, total: float | None = None, description: str | None = None
    ) -> None:
        pass

    def close(self) -> None:
        pass


class NullProgress:
    """Reports nothing. The default for library use and tests."""

    def task(self, description: str, total: float | None = None, unit: str = "it") -> Task:
        return _NullTask()

    def log(self, message: str) -> None:
        pass


NULL_PROGRESS: Progress = NullProgress()
