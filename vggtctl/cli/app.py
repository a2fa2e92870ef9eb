"""Root of the ``vggtctl`` CLI. Each workflow lives in its own module and registers itself here.

No torch import at module level anywhere under ``vggtctl/cli``: ``vggtctl --help`` must be fast.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from vggtctl import __version__
from vggtctl.cli import (
    cache,
    colmap,
    download,
    env,
    evaluate,
    finetune,
    infer,
    monitor,
    quantize,
    train_vln,
    view,
    webapp,
)
from vggtctl.cli.errors import report_usage_error
from vggtctl.cli.state import state
from vggtctl.errors import EXIT_INTERRUPTED

EPILOG = """\
Examples:

  vggtctl download weights --preset tiny --local-dir ./weights

  vggtctl download eth3d --synthetic --out demo_data --scenes 1 --views 4

  vggtctl infer demo_data/synth_000/images/dslr_images_undistorted --model tiny --out out/synth_000

  vggtctl evaluate --data demo_data --model tiny --json
"""

app = typer.Typer(
    name="vggtctl",
    help="One CLI for VGGT workflows: download, infer, evaluate, view, app, quantize, finetune, cache, train-vln, monitor, env.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vggtctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", envvar="VGGTCTL_DEBUG", help="Show tracebacks and debug logs.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or stage messages.")] = False,
) -> None:
    """vggtctl: run VGGT workflows from one tool."""
    state.debug = debug
    state.quiet = quiet
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


for _module in (
    download,
    infer,
    evaluate,
    view,
    webapp,
    finetune,
    cache,
    monitor,
    env,
    train_vln,
    colmap,
    quantize,
):
    _module.register(app)


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default: ``sys.argv[1:]``) and return the exit code.

    Typer's own usage errors (bad choice, number out of range, unknown option or command) are printed
    as the same ``Error:``/``Hint:`` pair as ours, exit 2. They are told apart from other exceptions
    by their public attributes only (``exit_code`` and ``format_message``), never by importing Click.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = app(args=args, prog_name="vggtctl", standalone_mode=False)
    except typer.Exit as e:
        return int(e.exit_code)
    except typer.Abort:
        return 130
    except Exception as e:
        if not (hasattr(e, "format_message") and isinstance(getattr(e, "exit_code", None), int)):
            raise
        if type(e).__name__ == "NoArgsIsHelpError":
            return int(e.exit_code)  # Typer printed the help already, as `vggtctl` alone should.
        return report_usage_error(e)
    return code if isinstance(code, int) else 0


def main() -> None:
    try:
        code = run()
    except KeyboardInterrupt:
        # A Ctrl-C handled late (after the command reported its own interruption, while Typer unwinds):
        # still an interruption, never a death by SIGINT (exit -2).
        code = EXIT_INTERRUPTED
    finally:
        # The command is over and its result written: a Ctrl-C while the interpreter tears down (torch
        # takes a moment) must not turn the exit code into a death by SIGINT.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)


if __name__ == "__main__":
    main()
