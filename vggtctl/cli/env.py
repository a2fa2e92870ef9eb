"""`vggtctl env`: versions, GPUs, cache paths and relevant environment variables."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from vggtctl.cli.errors import mapped_errors
from vggtctl.cli.output import Output

EPILOG = """\
Examples:

  vggtctl env

  vggtctl env --json > env.json

  HF_HUB_OFFLINE=1 vggtctl env --json
"""


@mapped_errors
def env_command(
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> None:
    """Show versions (vggtctl, python, torch, CUDA, NCCL, ...), GPUs, caches and environment variables."""
    from vggtctl.services.env_report import collect_env

    report = collect_env().to_dict()
    Output(json_mode=json_out).result(report, lambda console: _render(console, report))


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
    gpus = r["gpus"]
    section(
        "GPUs",
        [
            (
                f"cuda:{g['index']}",
                f"{g['name']}, {g['memory_total_mb']} MB, cc {g['compute_capability'] or '?'}",
            )
            for g in gpus
        ]
        or [("", "none visible")],
    )
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
