"""Run the CLI the way the ``vggtctl`` script does (``vggtctl.cli.app.run``), inside CliRunner's isolation.

``CliRunner.invoke(app, ...)`` calls Typer directly, so Typer's own usage errors would show its boxed
panel there; ``run`` is what maps them to ``Error:``/``Hint:``. Use this helper to see what users see.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from typer.testing import CliRunner

from vggtctl.cli.app import run


@dataclass
class Ran:
    exit_code: int
    stdout: str
    stderr: str


def run_cli(*args: object, env: Mapping[str, str | None] | None = None) -> Ran:
    """Run ``vggtctl ARGS`` in-process with captured stdout/stderr."""
    runner = CliRunner()
    with runner.isolation(env=dict(env or {})) as (out, err, _):
        code = run([str(a) for a in args])
        return Ran(code, out.getvalue().decode(), err.getvalue().decode())
