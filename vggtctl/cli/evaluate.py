"""`vggtctl evaluate`: depth, camera and point-cloud metrics on ETH3D (model or saved predictions)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from vggtctl.cli.errors import mapped_errors
from vggtctl.cli.options import (
    DeviceOption,
    Dtype,
    DtypeOption,
    JsonOption,
    Mode,
    ModelOption,
    Points,
    PresetOption,
    RevisionOption,
    ScenesOption,
    split_list,
)
from vggtctl.cli.output import Output

INTERRUPT_HINT = (
    "no report was written (an existing --out file is untouched); --save-vis keeps the images of the "
    "scenes already evaluated; re-run the same command to start again"
)

EPILOG = """\
Examples:

  vggtctl evaluate --model facebook/VGGT-1B --subset all --frames 10 --sample random --out report.json

  vggtctl evaluate --scenes courtyard --predictions out/courtyard --json

  vggtctl evaluate --data ./eth3d --model tiny --depth-align lstsq --icp --save-vis vis/

  vggtctl evaluate --scenes facade,electro --pc-reference depth --pc-align cameras --device cuda --dtype bf16

  vggtctl evaluate --data ./eth3d --scenes facade --reconstruction colmap_fused.ply --tolerances 0.02,0.05 --json
"""


class Sample(str, Enum):
    stride = "stride"
    random = "random"


class PcAlign(str, Enum):
    points = "points"
    cameras = "cameras"
    none = "none"


class PcReference(str, Enum):
    scan = "scan"
    depth = "depth"


# EvalConfig fields whose flag is not --field-name.
FLAGS = {"depth_align": "--depth-align", "visibility_tolerance": "visibility tolerance (no flag)"}


def parse_tolerances(text: str | None) -> tuple[float, ...] | None:
    """``"0.01,0.02,0.05"`` → ``(0.01, 0.02, 0.05)``; order and sign are checked by EvalConfig.

    Raises:
        UsageError: An entry is not a number.
    """
    from vggtctl.errors import UsageError

    if text is None:
        return None
    items = [t.strip() for t in text.split(",")]
    try:
        return tuple(float(t) for t in items if t)
    except ValueError:
        raise UsageError(
            f"--tolerances {text!r}: not a comma-separated list of numbers",
            "give metres, increasing, e.g. --tolerances 0.01,0.02,0.05",
        ) from None


@mapped_errors(flags=FLAGS, interrupted=INTERRUPT_HINT)
def evaluate_command(
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="ETH3D root with one folder per scene (default: the vggtctl dataset cache)."
        ),
    ] = None,
    scenes: ScenesOption = None,
    subset: Annotated[
        str | None, typer.Option("--subset", help="all, facades, indoor or outdoor (instead of --scenes).")
    ] = None,
    model: ModelOption = None,
    predictions: Annotated[
        Path | None,
        typer.Option(
            "--predictions",
            help="Evaluate saved `vggtctl infer` output: one folder, or a folder of <scene>/ outputs.",
        ),
    ] = None,
    preset: PresetOption = None,
    revision: RevisionOption = None,
    frames: Annotated[
        int | None, typer.Option("--frames", help="Frames per scene (the VGGT paper uses 10) (default: all).")
    ] = None,
    stride: Annotated[int, typer.Option("--stride", help="Take every K-th frame (sorted by name).")] = 1,
    sample: Annotated[
        Sample, typer.Option("--sample", help="stride, or random (seeded per scene; needs --frames).")
    ] = Sample.stride,
    seed: Annotated[int, typer.Option("--seed", help="Seed of --sample random and of scan subsampling.")] = 0,
    image_size: Annotated[
        int | None,
        typer.Option(
            "--image-size", help="Model input width (crop) (default: the model's, 518 for VGGT-1B)."
        ),
    ] = None,
    mode: Annotated[Mode, typer.Option("--mode", help="Preprocessing: crop or pad.")] = Mode.crop,
    depth_align: Annotated[
        list[str] | None,
        typer.Option(
            "--depth-align",
            help="median (per image), scene-median (one scale per scene), lstsq (scale+shift), none; "
            "repeat or comma-separate (default: median,scene-median).",
        ),
    ] = None,
    points: Annotated[
        Points, typer.Option("--points", help="Predicted points from depth + cameras, or the point head.")
    ] = Points.depth,
    pc_align: Annotated[
        PcAlign,
        typer.Option(
            "--pc-align",
            help="Sim(3) on valid-pixel points or on camera centres; with --reconstruction: none (as-is) "
            "or points (Sim(3) ICP onto the scans).",
        ),
    ] = PcAlign.points,
    icp: Annotated[bool, typer.Option("--icp/--no-icp", help="Refine the Sim(3) with rigid ICP.")] = False,
    icp_threshold: Annotated[
        float, typer.Option("--icp-threshold", help="ICP correspondence distance in metres.")
    ] = 0.1,
    pc_reference: Annotated[
        PcReference,
        typer.Option(
            "--pc-reference",
            help="Ground truth: the laser scans (ETH3D's official protocol), or GT depth unprojected "
            "(nearest-neighbour distances, the π³/CUT3R protocol).",
        ),
    ] = PcReference.scan,
    tolerances: Annotated[
        str | None,
        typer.Option(
            "--tolerances",
            help="ETH3D tolerances in metres, comma-separated, increasing (default: 0.01,0.02,0.05,0.1,0.2,0.5).",
        ),
    ] = None,
    nn_metrics: Annotated[
        bool,
        typer.Option(
            "--nn-metrics/--no-nn-metrics",
            help="Against scans, also report nearest-neighbour distances to the visible scan points.",
        ),
    ] = False,
    reconstruction: Annotated[
        Path | None,
        typer.Option(
            "--reconstruction",
            help="Score this point-cloud PLY (any method, scan frame, metres) on one --scenes NAME; "
            "needs only <scene>/dslr_scan_eval/.",
        ),
    ] = None,
    eth3d_evaluator: Annotated[
        Path | None,
        typer.Option(
            "--eth3d-evaluator",
            help="ETH3DMultiViewEvaluation binary: also run it on the same cloud, report both.",
        ),
    ] = None,
    voxel_size: Annotated[
        float,
        typer.Option(
            "--voxel-size",
            help="NN figures: finest voxel of the NN search and scan averaging, metres (0: exact, slow).",
        ),
    ] = 0.01,
    pc_max_points: Annotated[
        int,
        typer.Option(
            "--pc-max-points", help="NN figures: points scored per cloud (seeded subset beyond it; 0: all)."
        ),
    ] = 100_000,
    max_scan_points: Annotated[
        int,
        typer.Option(
            "--max-scan-points", help="NN figures: seeded subset of the visible scan points (0: all)."
        ),
    ] = 2_000_000,
    save_vis: Annotated[
        Path | None, typer.Option("--save-vis", help="Folder for depth/error PNGs and error point clouds.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write the full JSON report to this file (see --overwrite)."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing --out file (refused otherwise).")
    ] = False,
    device: DeviceOption = "auto",
    dtype: DtypeOption = Dtype.auto,
    json_out: JsonOption = False,
) -> None:
    """Depth, camera and point-cloud metrics of a model (or saved predictions) on ETH3D scenes."""
    from vggtctl.services.evaluate import EvalConfig, evaluate
    from vggtctl.services.metrics.eth3d_protocol import ETH3D_TOLERANCES

    config = EvalConfig(
        data=data,
        scenes=split_list(scenes) or None,
        subset=subset,
        model=model,
        preset=preset,
        revision=revision,
        predictions=predictions,
        frames=frames,
        stride=stride,
        sample=sample.value,
        seed=seed,
        image_size=image_size,
        mode=mode.value,
        depth_align=tuple(split_list(depth_align)) or ("median", "scene-median"),
        points=points.value,
        pc_align=pc_align.value,
        icp=icp,
        icp_threshold=icp_threshold,
        pc_reference=pc_reference.value,
        tolerances=parse_tolerances(tolerances) or ETH3D_TOLERANCES,
        nn_metrics=nn_metrics,
        reconstruction=reconstruction,
        eth3d_evaluator=eth3d_evaluator,
        voxel_size=voxel_size,
        # 0 means all points on the command line; the config says None.
        pc_max_points=pc_max_points if pc_max_points != 0 else None,
        max_scan_points=max_scan_points if max_scan_points != 0 else None,
        save_vis=save_vis,
        out=out,
        overwrite=overwrite,
        device=device,
        dtype=dtype.value,
    )
    output = Output(json_mode=json_out)
    try:
        report = evaluate(config, progress=output.progress())
    finally:
        output.close()
    for w in report.warnings:
        output.warn(w)
    data_out = report.to_dict()
    output.result(data_out, lambda console: render_report(console, data_out, report.out))


def _fmt(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def render_report(console: Any, r: dict[str, Any], out_path: str | None = None) -> None:
    """Rich tables: one row per scene plus the mean, for depth (per alignment), cameras and point clouds."""
    from rich.table import Table

    scenes, mean = r["scenes"], r["mean"]
    for align, m in mean["depth"].items():
        t = Table(title=f"Depth ({align} alignment, {r['settings']['protocol']['depth_aggregation'][align]})")
        t.add_column("scene")
        cols = [("abs_rel", "AbsRel"), ("sq_rel", "SqRel"), ("rmse", "RMSE"), ("rmse_log", "RMSElog"),
                ("mae", "MAE"), ("delta1", "δ<1.25"), ("delta2", "δ<1.25²"), ("delta3", "δ<1.25³"),
                ("inlier_1.03", "τ<1.03")]  # fmt: skip
        for _, head in cols:
            t.add_column(head, justify="right")
        for s in scenes:
            d = s["depth"].get(align)
            t.add_row(s["name"], *[_fmt(d["metrics"][k] if d else None) for k, _ in cols])
        t.add_row(f"mean ({m['scenes']})", *[_fmt(m[k]) for k, _ in cols], style="bold")
        console.print(t)
    if mean["camera"]:
        t = Table(title="Cameras (RRA/RTA/AUC in %, ATE in m after Sim(3))")
        t.add_column("scene")
        keys = ["rra@5", "rra@15", "rra@30", "rta@5", "rta@15", "rta@30", "auc@30", "ate_rmse"]
        for k in keys:
            t.add_column(k.upper().replace("ATE_RMSE", "ATE"), justify="right")
        for s in scenes:
            c = s["camera"]
            vals = [c["rra"][k[4:]] if k.startswith("rra") else c["rta"][k[4:]] if k.startswith("rta") else None
                    for k in keys[:6]] if c else [None] * 6  # fmt: skip
            vals += [c["auc@30"], c["ate"]["rmse"]] if c else [None, None]
            t.add_row(s["name"], *[_fmt(v, 1 if i < 7 else 3) for i, v in enumerate(vals)])
        m = mean["camera"]
        t.add_row(
            f"mean ({m['scenes']})",
            *[_fmt(m[k], 1 if i < 7 else 3) for i, k in enumerate(keys)],
            style="bold",
        )
        console.print(t)
    if mean["pointcloud"]:
        m = mean["pointcloud"]
        tols = m["tolerances"]
        align = r["settings"]["protocol"]["pointcloud_alignment"]
        if r["settings"].get("reconstruction"):
            align = (scenes[0].get("pointcloud_alignment") or {}).get("method", align)
        t = Table(title="ETH3D point cloud (official protocol)", caption=f"alignment: {align}")
        t.add_column("scene")
        t.add_column("metric")
        for tol in tols:
            t.add_column(f"{tol * 100:g} cm", justify="right")
        rows = [(s["name"], s["pointcloud"]) for s in scenes]
        if len(scenes) > 1:
            rows.append((f"mean ({m['scenes']})", m))
        for name, p in rows:
            for i, (key, label) in enumerate((("completeness", "comp"), ("accuracy", "acc"), ("f1", "F1"))):
                cells = [_fmt(v) for v in p[key]] if p else ["-"] * len(tols)
                t.add_row(name if i == 0 else "", label, *cells, style="bold" if p is m else None)
        console.print(t)
        for s in scenes:
            official = (s["pointcloud"] or {}).get("official_program")
            if official:
                console.print(
                    f"{s['name']}: ETH3DMultiViewEvaluation: "
                    + "  ".join(
                        f"{tol * 100:g} cm {c:.4f}/{a:.4f}/{f:.4f}"
                        for tol, c, a, f in zip(
                            official["tolerances"],
                            official["completeness"],
                            official["accuracy"],
                            official["f1"],
                            strict=False,
                        )
                    )
                )
    if mean["pointcloud_nn"]:
        proto = r["settings"]["protocol"]
        t = Table(
            title=f"Point cloud, nearest-neighbour distances in m ({proto['pointcloud_alignment']}; "
            f"voxel {proto['voxel_size_m']} m; not ETH3D's protocol)"
        )
        t.add_column("scene")
        for head in ("pred→gt", "gt→pred", "Chamfer"):
            t.add_column(head, justify="right")
        tols_nn = list(mean["pointcloud_nn"]["nn_f1"])
        for k in tols_nn:
            t.add_column(f"NN-F1@{k}", justify="right")
        for s in scenes:
            p = s["pointcloud_nn"]
            vals = (
                [
                    p["mean_dist_pred_to_gt"],
                    p["mean_dist_gt_to_pred"],
                    p["chamfer"],
                    *[p["nn_f1"][k] for k in tols_nn],
                ]
                if p
                else [None] * (3 + len(tols_nn))
            )
            t.add_row(s["name"], *[_fmt(v) for v in vals])
        m = mean["pointcloud_nn"]
        t.add_row(
            f"mean ({m['scenes']})", _fmt(m["mean_dist_pred_to_gt"]), _fmt(m["mean_dist_gt_to_pred"]),
            _fmt(m["chamfer"]), *[_fmt(m["nn_f1"][k]) for k in tols_nn], style="bold",
        )  # fmt: skip
        console.print(t)
    prov = r.get("provenance") or {}
    what = (
        prov.get("repo")
        or prov.get("source")
        or r["settings"].get("predictions")
        or r["settings"].get("reconstruction")
    )
    console.print(f"evaluated {what} on {len(scenes)} scene(s); {len(r['warnings'])} warning(s)")
    if out_path:
        console.print(f"report: {out_path}")


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` to the root app."""
    app.command(
        "evaluate",
        epilog=EPILOG,
        help="Depth, camera and point-cloud metrics on ETH3D (VGGT paper / ETH3D protocols).",
    )(evaluate_command)
