"""Root of the ``vggtctl`` CLI. Each workflow lives in its own module and registers itself here.

No torch import at module level anywhere under ``vggtctl/cli``: ``vggtctl --help`` must be fast.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from vggtctl import __version__
from vggtctl.cli import download, env, evaluate, infer, monitor
from vggtctl.cli.state import state

app = typer.Typer(
    name="vggtctl",
    help="One CLI for VGGT workflows: download, infer, evaluate, quantize, fine-tune, cache, monitor.",
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
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


for _module in (download, infer, evaluate, monitor, env):
    _module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
