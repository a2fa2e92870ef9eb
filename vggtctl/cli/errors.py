"""Map exceptions to ``Error:``/``Hint:`` on stderr and exit codes (0/1/2/130)."""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

import typer

from vggtctl.cli.output import stderr_console
from vggtctl.cli.state import state
from vggtctl.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, ConfigError, VggtctlError
from vggtctl.utils.interrupts import interrupt_at_safe_points

F = TypeVar("F", bound=Callable[..., Any])


def report_error(message: str, hint: str | None = None) -> None:
    err = stderr_console()
    err.print(f"Error: {message}", markup=False, style="bold red")
    if hint:
        err.print(f"Hint: {hint}", markup=False)


def report_usage_error(exc: Exception) -> int:
    """Print a Typer usage error (bad choice, out-of-range number, unknown option) as ``Error:``/``Hint:``.

    Typer raises these before our command runs; without this they would appear in its boxed panel,
    unlike every other error. Only public attributes of the exception are read (``format_message``,
    ``ctx.command_path``, ``exit_code``), so no Click import is needed.
    """
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)  # type: ignore[attr-defined]
    ctx = getattr(exc, "ctx", None)
    command = getattr(ctx, "command_path", None) or "vggtctl"
    # Typer words its own choice checks "Value error, 'foo' is not one of ..."; the prefix says nothing.
    message = " ".join(message.split()).replace(": Value error, ", ": ")
    report_error(message, f"see `{command} --help` for the options and their values")
    return int(getattr(exc, "exit_code", EXIT_USAGE))


INTERRUPT_HINT = "nothing was left half-written; re-run the same command to start again"


@overload
def mapped_errors(fn: F) -> F: ...
@overload
def mapped_errors(
    *, flags: Mapping[str, str] | None = None, interrupted: str = INTERRUPT_HINT
) -> Callable[[F], F]: ...
def mapped_errors(
    fn: F | None = None, *, flags: Mapping[str, str] | None = None, interrupted: str = INTERRUPT_HINT
) -> Any:
    """Wrap a command: our errors become a clean message + exit code; tracebacks only with --debug.

    ``flags`` maps the fields of the command's config to its flag names (``formats`` -> ``--format``)
    for :class:`ConfigError`; unlisted fields become ``--field-name``.

    ``interrupted`` is the hint shown after Ctrl-C, and must say what is true of that command's
    outputs then (resumable downloads: re-run to resume; infer and evaluate: the previous output is
    untouched, re-run to start again). A service that knows better raises
    :class:`vggtctl.errors.Interrupted` with its own hint.
    """
    if fn is None:
        return lambda f: _wrap(f, flags or {}, interrupted)
    return _wrap(fn, {}, interrupted)


def _wrap(fn: F, flags: Mapping[str, str], interrupted: str) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            # Ctrl-C becomes KeyboardInterrupt only in vggtctl code, never inside a native callback
            # (where it turned into other errors, was lost, or aborted the process).
            with interrupt_at_safe_points():
                return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except VggtctlError as e:
            if state.debug:
                traceback.print_exc()
            report_error(e.render(flags) if isinstance(e, ConfigError) else e.message, e.hint)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            if state.debug:
                traceback.print_exc()
            report_error("interrupted", interrupted)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as e:  # noqa: BLE001 - last-resort mapping, traceback with --debug
            if state.debug:
                traceback.print_exc()
            else:
                logging.getLogger("vggtctl").debug("unexpected error", exc_info=True)
            report_error(
                f"{type(e).__name__}: {e}",
                "this looks like a bug in vggtctl; re-run with --debug for the traceback and report it",
            )
            raise typer.Exit(EXIT_FAILURE) from None

    return wrapper  # type: ignore[return-value]
