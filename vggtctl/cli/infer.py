"""`vggtctl infer`: cameras, depth and a point cloud from images, a folder or a video."""

from __future__ import annotations

import json
from dataclasses import asdict
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from vggtctl.cli.errors import mapped_errors
from vggtctl.cli.options import (
    DeviceOption,
    Dtype,
    DtypeOption,
    HostfileOption,
    JsonOption,
    Launcher,
    LauncherOption,
    MasterAddrOption,
    MasterPortOption,
    Mode,
    ModelOption,
    NnodesOption,
    NodeRankOption,
    NprocOption,
    Points,
    PresetOption,
    RevisionOption,
)
from vggtctl.cli.output import Output
from vggtctl.defaults import DEFAULT_REPO

INTERRUPT_HINT = (
    "nothing was written: the --out folder is as it was before (a new run is moved in only when whole); "
    "re-run the same command to start again"
)

EPILOG = """\
Examples:

  vggtctl infer scene/images --out out/scene

  vggtctl infer a.jpg b.jpg c.jpg --model ./weights/model.safetensors --format ply,colmap --json

  vggtctl infer walk.mp4 --fps 2 --mode pad --device cuda --dtype bf16

  vggtctl infer long_scene/ --max-memory 20GB --dry-run

  vggtctl infer long_scene/ --chunk-size 64 --overlap 16

  vggtctl infer scene/images --model tiny --conf-threshold 3 --points head

  vggtctl infer scene/images --resolution original --bundle-adjust
"""


class Units(str, Enum):
    original = "original"
    model = "model"


class Resolution(str, Enum):
    model = "model"
    original = "original"


class ColmapFormat(str, Enum):
    bin = "bin"
    txt = "txt"


class Chunk(str, Enum):
    auto = "auto"
    off = "off"


SCALE_PANEL = "Memory plan and long sequences"


# InferConfig fields whose flag is not --field-name.
FLAGS = {"inputs": "INPUTS", "formats": "--format"}


@mapped_errors(flags=FLAGS, interrupted=INTERRUPT_HINT)
def infer_command(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Image files, folders of images (sorted by name) or video files.", show_default=False
        ),
    ],
    model: ModelOption = DEFAULT_REPO,
    preset: PresetOption = None,
    revision: RevisionOption = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("vggt_out"),
    mode: Annotated[
        Mode, typer.Option("--mode", help="crop: width 518, centre-crop; pad: white square.")
    ] = Mode.crop,
    device: DeviceOption = "auto",
    dtype: DtypeOption = Dtype.auto,
    points: Annotated[
        Points,
        typer.Option("--points", help="Point cloud from depth + cameras (more accurate) or the point head."),
    ] = Points.depth,
    conf_threshold: Annotated[
        str, typer.Option("--conf-threshold", help="Keep points with confidence >= this; 'N%' = percentile.")
    ] = "50%",
    formats: Annotated[
        str, typer.Option("--format", help="Comma-separated outputs: npz, ply, colmap (meta.json always).")
    ] = "npz,ply,colmap",
    colmap_units: Annotated[
        Units,
        typer.Option("--colmap-units", help="cameras.txt in original image pixels or model-input pixels."),
    ] = Units.original,
    colmap_format: Annotated[
        ColmapFormat,
        typer.Option(
            "--colmap-format", help="COLMAP model as binary *.bin (COLMAP's default) or text *.txt files."
        ),
    ] = ColmapFormat.bin,
    every: Annotated[int, typer.Option("--every", help="For videos: keep every N-th frame.")] = 1,
    fps: Annotated[
        float | None,
        typer.Option(
            "--fps",
            help="For videos: keep F frames per second of video (instead of --every).",
            show_default=False,
        ),
    ] = None,
    max_memory: Annotated[
        str | None,
        typer.Option(
            "--max-memory",
            help="Memory budget, e.g. 20GB or 16GiB (default: free GPU / available CPU memory).",
            rich_help_panel=SCALE_PANEL,
            show_default=False,
        ),
    ] = None,
    chunk: Annotated[
        Chunk,
        typer.Option(
            "--chunk",
            help="auto: one pass when it fits the budget, else overlapping chunks aligned by Sim(3); off: one pass or an error.",
            rich_help_panel=SCALE_PANEL,
        ),
    ] = Chunk.auto,
    chunk_size: Annotated[
        int | None,
        typer.Option(
            "--chunk-size", help="Force chunks of N frames.", rich_help_panel=SCALE_PANEL, show_default=False
        ),
    ] = None,
    overlap: Annotated[
        int | None,
        typer.Option(
            "--overlap",
            help="Frames shared by consecutive chunks (default: a quarter of the chunk, 2 to 16).",
            rich_help_panel=SCALE_PANEL,
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the memory plan (one pass or chunks) and stop.",
            rich_help_panel=SCALE_PANEL,
        ),
    ] = False,
    max_points: Annotated[
        int, typer.Option("--max-points", help="Cap on points in points.ply / points3D.txt (seeded subset).")
    ] = 500_000,
    resolution: Annotated[
        Resolution,
        typer.Option(
            "--resolution",
            help="original: also write depth, confidence and intrinsics on each source image's pixel grid "
            "(original/frame_NNNNNN.npz).",
        ),
    ] = Resolution.model,
    colmap_tracks: Annotated[
        bool,
        typer.Option(
            "--colmap-tracks/--no-colmap-tracks",
            help="points3D with 2-D observations (source pixel + frames where depth agrees).",
        ),
    ] = True,
    bundle_adjust: Annotated[
        bool,
        typer.Option(
            "--bundle-adjust",
            help="Refine the COLMAP cameras and points with COLMAP's bundle adjuster on track-head "
            "observations; kept only if the reprojection error goes down.",
        ),
    ] = False,
    ba_queries: Annotated[
        int, typer.Option("--ba-queries", help="Track-head query points per frame for --bundle-adjust.")
    ] = 256,
    ba_min_observations: Annotated[
        int,
        typer.Option("--ba-min-observations", help="Skip the adjustment if an image has fewer observations."),
    ] = 16,
    ba_refine_focal: Annotated[
        bool,
        typer.Option("--ba-refine-focal/--ba-fixed-focal", help="Let the adjustment refine focal lengths."),
    ] = True,
    json_out: JsonOption = False,
    nproc_per_node: NprocOption = None,
    nnodes: NnodesOption = None,
    node_rank: NodeRankOption = None,
    master_addr: MasterAddrOption = None,
    master_port: MasterPortOption = None,
    launcher: LauncherOption = Launcher.auto,
    hostfile: HostfileOption = None,
) -> None:
    """Predict cameras, depth and points for a set of images with ONE forward pass."""
    from vggtctl.services.infer import InferConfig, run_inference

    config = InferConfig(
        inputs=[str(p) for p in inputs],
        out=out,
        model=model or DEFAULT_REPO,
        preset=preset,
        revision=revision,
        mode=mode.value,
        device=device,
        dtype=dtype.value,
        points=points.value,
        conf_threshold=conf_threshold,
        formats=tuple(f.strip().lower() for f in formats.split(",") if f.strip()),
        colmap_units=colmap_units.value,
        colmap_format=colmap_format.value,
        every=every,
        fps=fps,
        max_points=max_points,
        max_memory=max_memory,
        chunk=chunk.value,
        chunk_size=chunk_size,
        overlap=overlap,
        dry_run=dry_run,
        resolution=resolution.value,
        colmap_tracks=colmap_tracks,
        bundle_adjust=bundle_adjust,
        ba_queries=ba_queries,
        ba_min_observations=ba_min_observations,
        ba_refine_focal=ba_refine_focal,
    )
    output = Output(json_mode=json_out)
    from vggtctl.cli.launching import LaunchArgs, launch_workers, show_dry_run
    from vggtctl.launch import Worker

    launch = LaunchArgs(nproc_per_node, nnodes, node_rank, master_addr, master_port, launcher, hostfile)
    launch_plan = launch.plan(device=device)
    # Several processes: each rank runs the frame-local parts on its share of the frames (docs/infer.md).
    log_dir = out.parent / f".{out.name}.launch-logs"
    result_file = log_dir / "result.json"
    worker = Worker(
        "vggtctl.services.infer_worker", [json.dumps(asdict(config), default=str), str(result_file)]
    )
    if dry_run:
        from vggtctl.services.infer import plan_run

        plan = plan_run(config, world=launch_plan.world_size)
        show_dry_run(
            launch_plan,
            worker,
            log_dir,
            output,
            document=lambda doc: {**plan.to_dict(), "launch": doc},
            render=lambda console, doc: _render_plan(console, plan, launch_plan, doc),
        )
        return
    # One process runs here, also when a launcher was forced.
    one_process = launch_plan.world_size == 1 or launch_plan.backend == "inprocess"
    if not one_process:
        result_file.unlink(missing_ok=True)
    code = launch_workers(launch_plan, worker, log_dir, output, in_process=one_process)
    if code is not None:
        if code == 0 and result_file.is_file():
            doc = json.loads(result_file.read_text(encoding="utf-8"))
            output.result(doc, lambda console: _render(console, doc))
        raise typer.Exit(code)
    try:
        result = run_inference(config, progress=output.progress())
    finally:
        output.close()
    output.result(result.to_dict(), lambda console: _render(console, result.to_dict()))


def _render_plan(console: Any, plan: Any, launch_plan: Any, doc: dict[str, Any]) -> None:
    console.print("\n".join(plan.lines()), markup=False)
    if launch_plan.world_size > 1:
        from vggtctl.cli.launching import render_dry_run
        from vggtctl.services.infer_dist import split_frames

        chunked = plan.mode == "chunked"
        split = split_frames(plan.chunk_size if chunked else plan.frames, launch_plan.world_size)
        console.print(
            f"devices: {launch_plan.world_size} ranks, frames per rank "
            + ("of each chunk (chunk-relative) " if chunked else "")
            + ", ".join(f"{a}-{b - 1}" for a, b in split)
            + " (frame-local parts split, tokens gathered for global attention)",
            markup=False,
        )
        render_dry_run(console, doc["launch"])


def _render(console: Any, r: dict[str, Any]) -> None:
    from rich.table import Table

    h, w = r["image_size_hw"]
    cloud = (
        f", {r['points']:,} points ({r['points_source']}, confidence >= {r['conf_threshold']:.4g})"
        if r["conf_threshold"] is not None
        else ""
    )
    console.print(
        f"{r['frames']} frames at {w}x{h} on {r['device']} ({r['dtype']}), preset {r['preset']}{cloud}"
    )
    table = Table(show_header=True, header_style="bold", box=None)
    table.add_column("output")
    table.add_column("path")
    for kind, path in r["files"].items():
        note = f" ({r['colmap_format']}, PINHOLE, {r['colmap_units']} pixels)" if kind == "colmap" else ""
        table.add_row(kind, f"{path}{note}")
    console.print(table)
    plan = r.get("plan") or {}
    if plan.get("mode") == "chunked":
        worst = max((c["residual_rel"] for c in r["chunks"]), default=0.0)
        weak = sum(1 for c in r["chunks"] if c["weak"])
        console.print(
            f"chunked: {len(r['chunks'])} chunks of {plan['chunk_size']} frames, overlap {plan['overlap']}; "
            f"worst alignment residual {worst:.2%} of the overlap's extent"
            + (f"; {weak} weak overlap(s), see meta.json" if weak else "")
        )
    ba = r.get("bundle_adjustment")
    if r.get("colmap_observations") is not None and not (ba and ba["refined"]):
        console.print(f"COLMAP tracks: {r['colmap_observations']:,} observations of {r['points']:,} points")
    if ba is not None:
        console.print(f"bundle adjustment: {'refined' if ba['refined'] else 'not applied'}: {ba['reason']}")
    console.print("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in r["timings_s"].items()))


def register(app: typer.Typer) -> None:
    """Add ``infer`` to the root app."""
    app.command(
        "infer", epilog=EPILOG, help="Cameras, depth and a coloured point cloud from images or a video."
    )(infer_command)
