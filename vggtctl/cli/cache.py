"""`vggtctl cache build|verify|stats|prune`: the VLN feature cache (VGGT layer-22 tokens per sample)."""

from __future__ import annotations

import json
import uuid
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from vggtctl.cli.errors import mapped_errors
from vggtctl.cli.launching import LaunchArgs, dry_run_or_launch, render_dry_run
from vggtctl.cli.options import (
    DeviceOption,
    DryRunOption,
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
    PresetOption,
    RevisionOption,
)
from vggtctl.cli.output import Output
from vggtctl.defaults import DEFAULT_REPO
from vggtctl.errors import EXIT_FAILURE

BUILD_EPILOG = """\
Examples:

  vggtctl cache build --data train_r2r_rxr.json --cache-dir /data/vggt_cache --dry-run

  vggtctl cache build --data trajectory_data/R2R/train --cache-dir ./vggt_cache --nproc-per-node 8

  vggtctl cache build --data train.jsonl --cache-dir ./c --model tiny --image-width 56 --verify --json
"""
VERIFY_EPILOG = """\
Examples:

  vggtctl cache verify --cache-dir ./vggt_cache

  vggtctl cache verify --cache-dir ./vggt_cache --all --fix --json
"""
STATS_EPILOG = """\
Examples:

  vggtctl cache stats --cache-dir ./vggt_cache --data train_r2r_rxr.json
"""
PRUNE_EPILOG = """\
Examples:

  vggtctl cache prune --cache-dir ./vggt_cache --data train_r2r_rxr.json --dry-run

  vggtctl cache prune --cache-dir ./vggt_cache --yes
"""

cache_app = typer.Typer(
    name="cache",
    help="Precompute JanusVLN's VGGT features per sample (causal over its frames); verify, inspect, prune.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


class History(str, Enum):
    streaming = "streaming"
    per_image = "per-image"


class StoreDtype(str, Enum):
    bf16 = "bf16"
    fp16 = "fp16"
    fp32 = "fp32"


class Missing(str, Enum):
    fail = "fail"
    skip = "skip"


CacheDirOption = Annotated[Path, typer.Option("--cache-dir", help="The cache's own directory.")]
DataOption = Annotated[
    Path | None,
    typer.Option("--data", help="JanusVLN .json/.jsonl data file, or a folder of trajectory folders."),
]
ImageRootOption = Annotated[
    Path | None,
    typer.Option("--image-root", help="Folder relative image paths start from (default: the data file's)."),
]
FLAGS = {"image_width": "--image-width", "max_samples": "--max-samples", "verify_samples": "--verify-samples"}


def _mib(n: int) -> str:
    if n < 2**20:
        return f"{n / 2**10:,.1f} KiB"
    return f"{n / 2**20:,.1f} MiB" if n < 2**30 else f"{n / 2**30:,.2f} GiB"


@mapped_errors(flags=FLAGS)
def build_command(
    data: Annotated[
        Path,
        typer.Option("--data", help="JanusVLN .json/.jsonl data file, or a folder of trajectory folders."),
    ],
    cache_dir: CacheDirOption,
    image_root: ImageRootOption = None,
    model: ModelOption = DEFAULT_REPO,
    preset: PresetOption = None,
    revision: RevisionOption = None,
    layer: Annotated[int, typer.Option("--layer", help="Aggregator layer (22 = JanusVLN's [-2]).")] = 22,
    image_width: Annotated[
        int, typer.Option("--image-width", help="Target width, bicubic; height rounded to 14 (644 or 518).")
    ] = 644,
    mode: Annotated[
        Mode, typer.Option("--mode", help="crop: width, centre crop; pad: white square.")
    ] = Mode.crop,
    history: Annotated[
        History,
        typer.Option(
            "--history",
            help="streaming: causal over the sample's frames; per-image: current frame alone (approx.).",
        ),
    ] = History.streaming,
    dtype: Annotated[
        StoreDtype, typer.Option("--dtype", help="Storage dtype of the values.")
    ] = StoreDtype.bf16,
    device: DeviceOption = "auto",
    max_samples: Annotated[
        int | None, typer.Option("--max-samples", help="Only the first N samples.")
    ] = None,
    skip_existing: Annotated[
        bool,
        typer.Option("--skip-existing/--rebuild", help="Keep entries already built (resume) or redo all."),
    ] = True,
    missing: Annotated[
        Missing,
        typer.Option("--missing", help="Samples with missing/unreadable images: fail (listed) or skip."),
    ] = Missing.fail,
    verify: Annotated[bool, typer.Option("--verify", help="Recompute some samples live afterwards.")] = False,
    verify_samples: Annotated[int, typer.Option("--verify-samples", help="How many (with --verify).")] = 4,
    nproc_per_node: NprocOption = None,
    nnodes: NnodesOption = None,
    node_rank: NodeRankOption = None,
    master_addr: MasterAddrOption = None,
    master_port: MasterPortOption = None,
    launcher: LauncherOption = Launcher.auto,
    hostfile: HostfileOption = None,
    dry_run: DryRunOption = False,
    json_out: JsonOption = False,
) -> None:
    """Build (or resume) the cache: one entry per sample, the current frame after the causal pass."""
    from vggtctl.launch import Worker
    from vggtctl.services.vlncache.build import BuildConfig, build_cache
    from vggtctl.services.vlncache.worker import config_to_json

    config = BuildConfig(
        data=data,
        cache_dir=cache_dir,
        image_root=image_root,
        model=model or DEFAULT_REPO,
        preset=preset,
        revision=revision,
        layer=layer,
        image_width=image_width,
        mode=mode.value,
        history=history.value,
        dtype=dtype.value,
        device=device,
        max_samples=max_samples,
        skip_existing=skip_existing,
        missing=missing.value,
        verify=verify,
        verify_samples=verify_samples,
        dry_run=dry_run,
    )
    config.validate()
    launch = LaunchArgs(nproc_per_node, nnodes, node_rank, master_addr, master_port, launcher, hostfile)
    plan = launch.plan(device=device)
    output = Output(json_mode=json_out)
    run_dir = cache_dir / "logs" / uuid.uuid4().hex[:12]
    worker = Worker(
        "vggtctl.services.vlncache.worker",
        ["--config", str(run_dir / "config.json"), "--result", str(run_dir / "result.json")],
    )

    def write_config() -> None:
        from vggtctl.utils.atomic import atomic_write_json

        atomic_write_json(run_dir / "config.json", config_to_json(config))
        output.info(f"launching {plan.world_size} processes ({plan.backend}); rank logs in {run_dir}")

    code = dry_run_or_launch(
        plan,
        worker,
        run_dir,
        output,
        dry_run=dry_run,
        document=lambda doc: {**build_cache(config).to_dict(), "launch": doc},  # the dry run's estimate
        render=_render_build,
        before_launch=write_config,
    )
    if code is None:
        try:
            result = build_cache(config, progress=output.progress()).to_dict()
        finally:
            output.close()
    elif code != 0:
        raise typer.Exit(code)
    elif dry_run:
        return
    else:
        result = json.loads((run_dir / "result.json").read_text())
    output.result(result, lambda console: _render_build(console, result))
    if result.get("verify") and not result["verify"]["ok"]:
        raise typer.Exit(EXIT_FAILURE)


def _render_build(console: Any, r: dict[str, Any]) -> None:
    skipped = f", {len(r['skipped_missing'])} skipped (missing images)" if r["skipped_missing"] else ""
    console.print(f"{r['samples']} samples{skipped}", markup=False)
    console.print(
        f"estimated {_mib(r['estimated_bytes'])} for them, {_mib(r['free_bytes'])} free at {r['cache_dir']}",
        markup=False,
    )
    if r["dry_run"]:
        render_dry_run(console, r["launch"])
        return
    console.print(
        f"{r['computed']} entries written or indexed ({_mib(r['bytes_written'])} new) in {r['passes']} passes, "
        f"{r['already_cached']} already cached; {r['world_size']} process(es)",
        markup=False,
    )
    spec = r["spec"] or {}
    console.print(
        f"spec: {spec.get('preset')} {spec.get('weights_sha256', '')[:12]} layer {spec.get('layer')} "
        f"width {spec.get('image_width')} {spec.get('mode')} {spec.get('history')} {spec.get('dtype')}",
        markup=False,
    )
    if r.get("verify"):
        _render_verify(console, r["verify"])


@mapped_errors
def verify_command(
    cache_dir: CacheDirOption,
    samples: Annotated[
        int, typer.Option("--samples", help="Entries to recompute live (random, seeded).")
    ] = 8,
    all_samples: Annotated[bool, typer.Option("--all", help="Recompute every entry.")] = False,
    recompute: Annotated[
        bool, typer.Option("--recompute/--no-recompute", help="Live recompute (else integrity only).")
    ] = True,
    fix: Annotated[bool, typer.Option("--fix", help="Rebuild the bad entries.")] = False,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Recompute with these weights (default: as built).")
    ] = None,
    device: DeviceOption = "auto",
    json_out: JsonOption = False,
) -> None:
    """Check every entry (size, header, sha256) and recompute some live; exit 1 when anything is bad."""
    from vggtctl.services.vlncache.verify import VerifyConfig, verify_cache

    output = Output(json_mode=json_out)
    try:
        report = verify_cache(
            VerifyConfig(
                cache_dir=cache_dir,
                samples=None if all_samples else samples,
                recompute=recompute,
                fix=fix,
                device=device,
                model=model,
            ),
            progress=output.progress(),
        )
    finally:
        output.close()
    doc = report.to_dict()
    output.result(doc, lambda console: _render_verify(console, doc))
    if not report.ok:
        raise typer.Exit(EXIT_FAILURE)


def _render_verify(console: Any, r: dict[str, Any]) -> None:
    worst = "n/a" if r["worst_rel_error"] is None else f"{r['worst_rel_error']:.3g}"
    console.print(
        f"{r['checked_integrity']} entries checked, {r['recomputed']} recomputed "
        f"(worst rel. error {worst}, tolerance {r['tolerance']:.3g}): "
        + ("OK" if r["ok"] else f"{len(r['bad'])} bad"),
        markup=False,
    )
    for bad in r["bad"]:
        fixed = " (fixed)" if bad["id"] in r["fixed"] else ""
        console.print(f"  {bad['id']}: {bad['problem']}{fixed}", markup=False)


@mapped_errors
def stats_command(
    cache_dir: CacheDirOption,
    data: DataOption = None,
    image_root: ImageRootOption = None,
    json_out: JsonOption = False,
) -> None:
    """Entries, bytes, the spec (model, layer, preprocessing, dtype, history) and a data file's coverage."""
    from vggtctl.services.vlncache.maintain import cache_stats

    output = Output(json_mode=json_out)
    doc = cache_stats(cache_dir, data, image_root).to_dict()
    output.result(doc, lambda console: _render_stats(console, doc))


def _render_stats(console: Any, r: dict[str, Any]) -> None:
    s = r["spec"]
    console.print(f"{r['entries']} entries, {r['entry_files']} files, {_mib(r['bytes'])}", markup=False)
    console.print(
        f"model {s['preset']} sha256 {s['weights_sha256'][:16]}, layer {s['layer']} ({s['tokens']}), "
        f"{s['dtype']} (computed {s['compute_dtype']})",
        markup=False,
    )
    console.print(
        f"preprocessing width {s['image_width']} {s['mode']} {s['resample']}; history {s['history']}; "
        f"format {s['format_version']}",
        markup=False,
    )
    if r["other_specs"]:
        console.print(
            f"{r['rows_other_specs']} rows of {r['other_specs']} other spec(s) (prune removes them)"
        )
    if r["coverage"]:
        c = r["coverage"]
        console.print(
            f"coverage of {c['data']}: {c['cached']}/{c['samples']} ({c['fraction']:.1%})", markup=False
        )


@mapped_errors
def prune_command(
    cache_dir: CacheDirOption,
    data: DataOption = None,
    image_root: ImageRootOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would go; remove nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Remove without asking.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Remove entries of other specs, orphans, and (with --data) samples the data file no longer has."""
    from vggtctl.services.vlncache.maintain import prune_cache

    output = Output(json_mode=json_out)
    plan = prune_cache(cache_dir, data, image_root, dry_run=dry_run, yes=yes).to_dict()
    output.result(plan, lambda console: _render_prune(console, plan))


def _render_prune(console: Any, r: dict[str, Any]) -> None:
    verb = "removed" if r["removed"] else "would remove"
    console.print(
        f"{verb} {r['remove_files']} entries ({_mib(r['bytes'])}) and {r['remove_rows']} manifest rows",
        markup=False,
    )
    for f in r["files"]:
        console.print(f"  {f}", markup=False)


def register(app: typer.Typer) -> None:
    """Add the ``cache`` group to the root app."""
    if not cache_app.registered_commands:
        cache_app.command("build", epilog=BUILD_EPILOG)(build_command)
        cache_app.command("verify", epilog=VERIFY_EPILOG)(verify_command)
        cache_app.command("stats", epilog=STATS_EPILOG)(stats_command)
        cache_app.command("prune", epilog=PRUNE_EPILOG)(prune_command)
    app.add_typer(cache_app, name="cache")
