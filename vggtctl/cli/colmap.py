"""`vggtctl colmap refine`: bundle-adjust a COLMAP model (cameras and points) with COLMAP's own adjuster."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from vggtctl.cli.errors import mapped_errors
from vggtctl.cli.options import JsonOption
from vggtctl.cli.output import Output

REFINE_EPILOG = """\
Examples:

  vggtctl colmap refine out/colmap

  vggtctl colmap refine out/colmap --out out/colmap_refined --fixed-focal --json

  vggtctl colmap refine sparse/0 --loss cauchy --loss-scale 2 --min-observations 32
"""

INTERRUPT_HINT = (
    "the model is written only once the adjustment is done: the folder is as it was; re-run to start again"
)

colmap_app = typer.Typer(
    name="colmap",
    help="Work on COLMAP models: bundle adjustment (refine).",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


class Loss(str, Enum):
    trivial = "trivial"
    soft_l1 = "soft_l1"
    cauchy = "cauchy"
    huber = "huber"


@colmap_app.command("refine", epilog=REFINE_EPILOG)
@mapped_errors(interrupted=INTERRUPT_HINT)
def refine_command(
    model_dir: Annotated[
        Path, typer.Argument(help="Folder with cameras/images/points3D (.bin or .txt).", show_default=False)
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the refined model here (default: in place).")
    ] = None,
    min_observations: Annotated[
        int, typer.Option("--min-observations", help="Keep the model as it is if an image has fewer.")
    ] = 16,
    refine_focal: Annotated[
        bool, typer.Option("--refine-focal/--fixed-focal", help="Refine focal lengths too.")
    ] = True,
    refine_points: Annotated[
        bool, typer.Option("--refine-points/--fixed-points", help="Refine 3-D points too.")
    ] = True,
    max_iterations: Annotated[int, typer.Option("--max-iterations", help="Solver iterations.")] = 100,
    loss: Annotated[
        Loss, typer.Option("--loss", help="Robust loss on the reprojection residuals.")
    ] = Loss.trivial,
    loss_scale: Annotated[float, typer.Option("--loss-scale", help="Robust loss scale in pixels.")] = 1.0,
    json_out: JsonOption = False,
) -> None:
    """Refine a COLMAP model's cameras and points; keep it unchanged if the error would not go down."""
    from vggtctl.services.bundle_adjust import BundleAdjustConfig, refine_and_report

    config = BundleAdjustConfig(
        min_observations=min_observations,
        refine_focal_length=refine_focal,
        refine_points=refine_points,
        max_iterations=max_iterations,
        loss=loss.value,
        loss_scale=loss_scale,
    )
    report = refine_and_report(model_dir, out, config)
    output = Output(json_mode=json_out)
    output.result(report, lambda console: _render(console, report))


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g} px"


def _render(console: Any, r: dict[str, Any]) -> None:
    console.print(f"{'refined' if r['refined'] else 'not refined'}: {r['reason']}")
    console.print(
        f"{r['images']} images, {r['points']:,} points, {r['observations']:,} observations "
        f"(fewest per image: {r['min_observations_per_image']})"
    )
    console.print(
        f"reprojection error: mean {_fmt(r['error_before_px'])} -> {_fmt(r['error_after_px'])}, "
        f"median {_fmt(r['median_error_before_px'])} -> {_fmt(r['median_error_after_px'])}"
    )
    console.print(f"model: {r['model_dir']}; report: {r['report_file']}")


def register(app: typer.Typer) -> None:
    """Add the ``colmap`` group (``refine``) to the root app."""
    app.add_typer(colmap_app, name="colmap")
