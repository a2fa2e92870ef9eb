"""Errors raised by services. The CLI maps them to ``Error:`` / ``Hint:`` lines and exit codes.

Services never print; they raise one of these with a message that names the bad value and a hint
that says what to try next.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_STALL = 3
EXIT_INTERRUPTED = 130


class VggtctlError(Exception):
    """Base error: a one-line message plus an optional hint. Runtime failures exit 1."""

    exit_code: int = EXIT_FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(VggtctlError):
    """Bad options, configuration or arguments (exit 2)."""

    exit_code = EXIT_USAGE


class InputError(VggtctlError):
    """Bad input data: images, files, logs, datasets (exit 1)."""


class CheckpointError(VggtctlError):
    """A checkpoint that cannot be loaded: missing/unexpected/mis-shaped keys, wrong preset, unsafe file."""


class DownloadError(VggtctlError):
    """Network or verification failure while fetching data or weights (exit 1)."""


class HostUnreachableError(DownloadError):
    """The host's name does not resolve or it refuses connections: not transient, so never retried (exit 1)."""


class DiskSpaceError(VggtctlError):
    """Not enough free disk space for the requested work (exit 1)."""


class EvaluationError(VggtctlError):
    """Nothing could be evaluated, or the inputs do not belong together (exit 1)."""
