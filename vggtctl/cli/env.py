"""`vggtctl env`: versions, GPUs, cache paths and relevant environment variables."""

from __future__ import annotations

from typing import Any

import typer

from vggtctl.cli.errors import mapped_errors
from vggtctl.cli.options import JsonOption
from vggtctl.cli.output import Output

EPILOG = """\
Examples:

  vggtctl env

  vggtctl env --json > env.json

  HF_HUB_OFFLINE=1 vggtctl env --json
"""


@mapped_errors
def env_command(
    json_out: JsonOption = False,
) -> None:
    """Show versions (vggtctl, python, torch, CUDA, NCCL, ...), GPUs, CPU bf16 support, caches and env variables."""
    from vggtctl.paths import home_problem
    from vggtctl.services.env_report import collect_env

    report = collect_env().to_dict()
    output = Output(json_mode=json_out)
    problem = home_problem()
    if problem is not None:
        # Downloads would fail on it: say so here, where users look first.
        output.warn(f"{problem}; downloads will refuse it (point VGGTCTL_HOME at a folder)")
    output.result(report, lambda console: _render(console, report))


def _render(console: Any, r: dict[str, Any]) -> None:
    from rich.table import Table

    def section(title: str, rows: list[tuple[str, Any]], none: str = "-") -> None:
        table = Table(title=title, title_justify="left", title_style="bold", show_header=False, box=None)
        table.add_column(style="cyan")
        table.add_column()
        for key, value in rows:
            table.add_row(key, none if value is None else str(value))
        console.print(table)

    section("vggtctl", [("vggtctl", r["vggtctl"]), ("python", r["python"]), ("platform", r["platform"])])
    section("packages", list(r["packages"].items()))
    cuda = r["cuda"]
    section("CUDA", [(k, v) for k, v in cuda.items()])
    section("CPU", list(r["cpu"].items()))
    gpus = r["gpus"]
    section(
        "GPUs",
        [
            (
                f"cuda:{g['index']}",
                f"{g['name']}, {g['memory_total_mb'] or 0:,.0f} MiB, cc {g['compute_capability'] or '?'}",
            )
            for g in gpus
        ]
        or [("", "none visible")],
    )
    section("processes", list(r["dist"].items()))
    section("paths", list(r["paths"].items()))
    section("cached weights", [("", w) for w in r["cached_weights"]] or [("", "none")])
    section("environment", list(r["env"].items()), none="unset")
    for note in r["notes"]:
        console.print(f"Note: {note}")


def register(app: typer.Typer) -> None:
    """Add ``env`` to the root app."""
    app.command("env", epilog=EPILOG, help="Versions, GPUs, cache paths and relevant environment variables.")(
        env_command
    )
