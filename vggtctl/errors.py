"""Errors raised by services. The CLI maps them to ``Error:`` / ``Hint:`` lines and exit codes.

Services never print; they raise one of these with a message that names the bad value and a hint
that says what to try next.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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


_NO_VALUE = object()


@dataclass(frozen=True)
class Problem:
    """One bad setting of a config: which field(s), the value, and what is wrong with it.

    Services describe problems in terms of their own fields (``voxel_size=-1.0``); the CLI renders the
    same problem with the flag the user typed (``--voxel-size -1``), see :meth:`ConfigError.render`.
    """

    fields: tuple[str, ...]
    reason: str
    value: Any = _NO_VALUE
    refs: tuple[str, ...] = ()

    @classmethod
    def of(
        cls, field: str | Sequence[str], reason: str, value: Any = _NO_VALUE, refs: Sequence[str] = ()
    ) -> Problem:
        """A problem with ``field`` (or several fields together) and, when given, its ``value``.

        ``reason`` may name other fields as ``{field}`` when they are listed in ``refs``: each front end
        shows them its own way (``overwrite`` for the API, ``--overwrite`` on the command line).
        """
        return cls((field,) if isinstance(field, str) else tuple(field), reason, value, tuple(refs))

    def describe(self, name: Callable[[str], str] | None = None) -> str:
        """``field=value (reason)`` for API users; with ``name`` (field -> flag): ``--flag value (reason)``."""
        show = name or (lambda f: f)
        reason = self.reason.format(**{r: show(r) for r in self.refs}) if self.refs else self.reason
        names = " and ".join(show(f) for f in self.fields)
        if self.value is _NO_VALUE:
            return f"{names}: {reason}"
        if name is None:
            return f"{names}={self.value!r} ({reason})"
        return f"{names} {_cli_value(self.value)} ({reason})"


def _cli_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "''"
    return str(value) if str(value) and " " not in str(value) else repr(str(value))


class ConfigError(UsageError):
    """A config with one or more bad values, all reported at once (exit 2).

    The message names fields (``invalid EvalConfig: voxel_size=-1.0 (must be >= 0); ...``); a front end
    calls :meth:`render` with its own names for the fields (``--voxel-size -1 (must be >= 0); ...``).
    """

    def __init__(self, what: str, problems: Sequence[Problem], hint: str | None = None) -> None:
        self.what = what
        self.problems = list(problems)
        super().__init__(self._join(None), hint)

    def _join(self, name: Callable[[str], str] | None) -> str:
        return f"invalid {self.what}: " + "; ".join(p.describe(name) for p in self.problems)

    def render(self, flags: Mapping[str, str] | None = None) -> str:
        """The message with each field shown as its flag: ``flags[field]``, else ``--field-name``."""
        table = flags or {}
        return self._join(lambda f: table.get(f, "--" + f.replace("_", "-")))


def raise_problems(what: str, problems: Sequence[Problem], hint: str | None = None) -> None:
    """Raise one :class:`ConfigError` listing every problem, if there is any."""
    if problems:
        raise ConfigError(what, problems, hint)


class InputError(VggtctlError):
    """Bad input data: images, files, logs, datasets (exit 1)."""


class CheckpointError(VggtctlError):
    """A checkpoint that cannot be loaded: missing/unexpected/mis-shaped keys, wrong preset, unsafe file."""


class DownloadError(VggtctlError):
    """Network or verification failure while fetching data or weights (exit 1)."""


class HostUnreachableError(DownloadError):
    """The host's name does not resolve or it refuses connections: not transient, so never retried (exit 1)."""


class LaunchError(VggtctlError):
    """A launch that could not start its workers, e.g. its rendezvous port taken before rank 0 bound it (exit 1)."""


class DiskSpaceError(VggtctlError):
    """Not enough free disk space for the requested work (exit 1)."""


class EvaluationError(VggtctlError):
    """Nothing could be evaluated, or the inputs do not belong together (exit 1)."""


class Interrupted(VggtctlError):
    """Ctrl-C, with a hint that says what the interrupted work left behind (exit 130)."""

    exit_code = EXIT_INTERRUPTED
