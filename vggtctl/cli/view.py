"""`vggtctl view`: the point cloud and cameras of a run in the browser (viser), or one HTML file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from vggtctl.cli.errors import mapped_errors
from vggtctl.cli.options import HostOption, JsonOption, PortOption
from vggtctl.cli.output import Output
from vggtctl.cli.serving import serve_until_stopped

EPILOG = """\
Examples:

  vggtctl view out/scene1

  vggtctl view out/scene1/predictions.npz --conf-threshold 80% --points head --port 8081

  vggtctl view out/scene1/colmap --host 0.0.0.0

  vggtctl view out/scene1 --max-points 200000 --snapshot scene1.html
"""


@mapped_errors(
    interrupted="the viewer stopped; it writes nothing but --snapshot (written whole or not at all)"
)
def view_command(
    source: Annotated[
        Path,
        typer.Argument(
            help="An infer output folder, a predictions.npz, a COLMAP model folder, or an evaluate "
            "--save-vis scene folder (its pointcloud_error.ply).",
            show_default=False,
        ),
    ],
    port: PortOption = 8080,
    host: HostOption = "127.0.0.1",
    max_points: Annotated[
        int, typer.Option("--max-points", help="Points per source at most (a seeded uniform subset).")
    ] = 1_000_000,
    conf_threshold: Annotated[
        str,
        typer.Option("--conf-threshold", help="Initial slider: keep confidence >= this; 'N%' = percentile."),
    ] = "50%",
    points: Annotated[
        str, typer.Option("--points", help="Initial point source: depth (depth map + camera) or head.")
    ] = "depth",
    snapshot: Annotated[
        Path | None,
        typer.Option(
            "--snapshot", help="Write the scene as one HTML file that opens without a server, and exit."
        ),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Show a reconstruction in the browser: points, one textured frustum per frame, a panel."""
    from vggtctl.services.viewer import ViewConfig, open_viewer, write_snapshot

    config = ViewConfig(
        source=str(source),
        host=host,
        port=port,
        max_points=max_points,
        conf_threshold=conf_threshold,
        points=points,
        snapshot=snapshot,
    )
    output = Output(json_mode=json_out)
    if snapshot is not None:
        snap = write_snapshot(config)
        output.result(
            snap.__dict__,
            lambda c: c.print(
                f"{snap.path}: {snap.bytes:,} bytes, {snap.frames} frames, {snap.points:,} points"
            ),
        )
        return
    viewer = open_viewer(config)
    try:
        result = {
            "url": viewer.url,
            "host": host,
            "port": viewer.port,
            "source": str(source),
            "kind": viewer.scene.kind,
            "frames": len(viewer.scene.frames),
            "points": {k: len(v) for k, v in viewer.scene.points.items()},
        }
        output.result(result, lambda c: _render(c, result))
    except BaseException:
        viewer.stop()
        raise
    serve_until_stopped(output, viewer.stop, "the viewer")


def _render(console: Any, r: dict[str, Any]) -> None:
    sets = ", ".join(f"{k} {v:,}" for k, v in r["points"].items()) or "no points"
    console.print(f"{r['url']}  ({r['kind']}: {r['frames']} frames; points: {sets})", markup=False)


def register(app: typer.Typer) -> None:
    """Add ``view`` to the root app."""
    app.command("view", epilog=EPILOG, help="Interactive 3D view of a run's points and cameras (viser).")(
        view_command
    )
