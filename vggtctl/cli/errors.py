"""Map exceptions to ``Error:``/``Hint:`` on stderr and exit codes (0/1/2/130)."""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from vggtctl.cli.output import stderr_console
from vggtctl.cli.state import state
from vggtctl.errors import EXIT_FAILURE, EXIT_INTERRUPTED, VggtctlError

F = TypeVar("F", bound=Callable[..., Any])


def report_error(message: str, hint: str | None = None) -> None:
    err = stderr_console()
    err.print(f"Error: {message}", markup=False, style="bold red")
    if hint:
        err.print(f"Hint: {hint}", markup=False)


def mapped_errors(fn: F) -> F:
    """Wrap a command: our errors become a clean message + exit code; tracebacks only with --debug."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except VggtctlError as e:
            if state.debug:
                traceback.print_exc()
            report_error(e.message, e.hint)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            report_error("interrupted", "re-run the same command to resume where it stopped")
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
