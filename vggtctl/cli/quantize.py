"""`vggtctl quantize`: an int8 VGGT artifact that loads back through `--model DIR`, with a measured report."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from vggtctl.cli.errors import mapped_errors
from vggtctl.cli.options import DeviceOption, JsonOption, ModelOption, PresetOption, RevisionOption
from vggtctl.cli.output import Output
from vggtctl.defaults import DEFAULT_REPO

INTERRUPT_HINT = "nothing was written: the artifact is staged beside --out and moved in only when whole"

EPILOG = """\
Examples:

  vggtctl quantize --model tiny --out tiny_int8

  vggtctl quantize --type static --observer histogram --calibration-data demo_data --out vggt_w8a8

  vggtctl quantize --rotate hadamard --quantize-heads --out vggt_int8 --json

  vggtctl quantize --type weight-only --weight-dtype fp8 --out vggt_fp8

  vggtctl infer scene/images --model vggt_int8 --out out/scene
"""


class QuantType(str, Enum):
    dynamic = "dynamic"
    static = "static"
    weight_only = "weight-only"


class ObserverKind(str, Enum):
    minmax = "minmax"
    histogram = "histogram"
    per_channel = "per_channel"


class WeightDtype(str, Enum):
    int = "int"
    fp8 = "fp8"


class Rotation(str, Enum):
    none = "none"
    hadamard = "hadamard"


# QuantizeConfig fields whose flag is not --field-name.
FLAGS = {"model": "--model", "type": "--type"}


@mapped_errors(flags=FLAGS, interrupted=INTERRUPT_HINT)
def quantize_command(
    model: ModelOption = DEFAULT_REPO,
    preset: PresetOption = None,
    revision: RevisionOption = None,
    qtype: Annotated[
        QuantType,
        typer.Option(
            "--type",
            "--quantization_type",
            help="dynamic (W8A8, per-token), static (calibrated) or weight-only.",
        ),
    ] = QuantType.dynamic,
    observer: Annotated[
        ObserverKind | None,
        typer.Option("--observer", "--observer_type", help="Static only: minmax, histogram or per_channel."),
    ] = None,
    calibration_data: Annotated[
        Path | None,
        typer.Option(
            "--calibration-data", "--calibration_data", help="ETH3D root or image folder(s) to calibrate on."
        ),
    ] = None,
    calibration_samples: Annotated[
        int, typer.Option("--calibration-samples", "--calibration_samples", help="Scenes to calibrate on.")
    ] = 4,
    calibration_frames: Annotated[
        int,
        typer.Option("--calibration-frames", "--calibration_frames", help="Frames per calibration scene."),
    ] = 4,
    quantize_attention: Annotated[
        bool,
        typer.Option(
            "--quantize-attention/--no-quantize-attention",
            "--quantize_attention/--no_quantize_attention",
            help="Also quantize attention qkv/proj (MLPs always).",
        ),
    ] = True,
    quantize_heads: Annotated[
        bool,
        typer.Option(
            "--quantize-heads/--no-quantize-heads",
            "--quantize_heads/--no_quantize_heads",
            help="Also quantize camera trunk, DPT/track convolutions and head Linears (final layers stay float).",
        ),
    ] = False,
    quantize_patch_embed: Annotated[
        bool,
        typer.Option(
            "--quantize-patch-embed/--no-quantize-patch-embed",
            help="Also quantize the DINOv2 patch-embed blocks.",
        ),
    ] = True,
    rotate: Annotated[
        Rotation, typer.Option("--rotate", help="Fold a Hadamard rotation into the aggregator Linears first.")
    ] = Rotation.none,
    bits: Annotated[int, typer.Option("--bits", help="8, or 4 (weight-only, CUDA).")] = 8,
    weight_dtype: Annotated[
        WeightDtype,
        typer.Option(
            "--weight-dtype",
            help="Number format of the quantized weights: int (--bits 8|4) or fp8 (e4m3, 8 bits; "
            "weight-only runs on CPU too, dynamic needs CUDA >= sm_89).",
        ),
    ] = WeightDtype.int,
    device: DeviceOption = "auto",
    out: Annotated[Path, typer.Option("--out", "-o", help="Artifact folder.")] = Path("vggt_quantized"),
    compare: Annotated[
        bool,
        typer.Option(
            "--compare/--no-compare",
            "--compare_outputs/--no_compare_outputs",
            help="Measure float vs quantized on held-out frames into report.json.",
        ),
    ] = True,
    eval_data: Annotated[
        Path | None,
        typer.Option("--eval-data", help="ETH3D root with ground truth: held-out frames + metrics."),
    ] = None,
    compare_frames: Annotated[
        int, typer.Option("--compare-frames", help="Held-out frames to compare on.")
    ] = 4,
    repeats: Annotated[
        int, typer.Option("--repeats", help="Timed forwards per model (median reported).")
    ] = 3,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the calibration / held-out scene choice.")] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing artifact at --out.")
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Quantize VGGT to int8 and save an artifact that `--model DIR` loads."""
    from vggtctl.services.quantize import QuantizeConfig
    from vggtctl.services.quantize.run import quantize

    config = QuantizeConfig(
        model=model or DEFAULT_REPO,
        out=out,
        type=qtype.value,
        observer=observer.value if observer else None,
        calibration_data=calibration_data,
        calibration_samples=calibration_samples,
        calibration_frames=calibration_frames,
        quantize_attention=quantize_attention,
        quantize_heads=quantize_heads,
        quantize_patch_embed=quantize_patch_embed,
        rotate=rotate.value,
        bits=bits,
        weight_dtype=weight_dtype.value,
        device=device,
        compare=compare,
        eval_data=eval_data,
        compare_frames=compare_frames,
        repeats=repeats,
        seed=seed,
        overwrite=overwrite,
        preset=preset,
        revision=revision,
    )
    output = Output(json_mode=json_out)
    try:
        result = quantize(config, progress=output.progress())
    finally:
        output.close()
    output.result(result.to_dict(), lambda console: _render(console, result.to_dict()))


def _mb(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 1e6:,.1f} MB"


def _render(console: Any, r: dict[str, Any]) -> None:
    from rich.table import Table

    schemes = ", ".join(f"{n} {k}" for k, n in sorted(r["layers"].items()))
    console.print(
        f"{r['method']} {'fp8' if r.get('weight_dtype') == 'fp8' else 'int' + str(r['bits'])} (observer {r['observer'] or '-'}, rotation {r['rotation']}) on "
        f"{r['device']}: {schemes}; {len(r['float_layers'])} layers or layer kinds kept float (report.json lists them)"
    )
    console.print(f"artifact: {r['out']} ({_mb(r['file_bytes'])}); use it with --model {r['out']}")
    rep = r.get("report")
    if not rep:
        return
    table = Table(show_header=True, header_style="bold", box=None)
    for col in ("", "file", "latency (median)", "peak load (own process)", "peak run (own process)"):
        table.add_column(col)
    for name in ("float", "quantized"):
        m = rep[name]
        table.add_row(
            name,
            _mb(m["file_bytes"]),
            f"{m['latency_s_median'] * 1000:.1f} ms",
            _mb(m["own_process"]["peak_load_bytes"]),
            _mb(m["own_process"]["peak_run_bytes"]),
        )
    console.print(table)
    console.print(
        f"size {rep['size_ratio']:.3f}x, speed {rep['speedup']:.2f}x on {rep['frames']} frames "
        f"{rep['image_hw'][1]}x{rep['image_hw'][0]} ({rep['float']['threads']} threads)"
    )
    console.print("output error vs float: " + ", ".join(f"{k} {v:.4g}" for k, v in rep["error"].items()))


def register(app: typer.Typer) -> None:
    """Add ``quantize`` to the root app."""
    app.command(
        "quantize", epilog=EPILOG, help="Quantize VGGT to int8: a loadable artifact plus a measured report."
    )(quantize_command)
