"""`vggtctl download`: ETH3D scenes (real or synthetic) and VGGT weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from vggtctl.cli.errors import mapped_errors
from vggtctl.cli.options import JsonOption, ScenesOption, split_list
from vggtctl.cli.output import Output
from vggtctl.utils.fmt import bytes_si

INTERRUPT_HINT = (
    "re-run the same command to resume: extracted archives are skipped and partial downloads continue "
    "from their .part files"
)
SYNTHETIC_INTERRUPT_HINT = (
    "the scenes finished before Ctrl-C are whole and the unfinished one was removed; re-run the same "
    "command to render them all again"
)

ETH3D_EPILOG = """\
Examples:

  vggtctl download eth3d --subset facades

  vggtctl download eth3d --scenes facade,electro --kinds undistorted,jpg,depth,scan_eval --jobs 4

  vggtctl download eth3d --dry-run --json

  vggtctl download eth3d --synthetic --out demo_data --scenes 2 --views 6
"""

DOWNLOAD_EPILOG = """\
Examples:

  vggtctl download weights --dry-run

  vggtctl download weights --preset tiny --local-dir ./weights

  vggtctl download eth3d --scenes courtyard --dry-run

  vggtctl download eth3d --synthetic --out demo_data --scenes 1 --views 4
"""

download_app = typer.Typer(
    name="download",
    help="Fetch datasets (ETH3D) and VGGT weights: resumable, verified, cached.",
    epilog=DOWNLOAD_EPILOG,
    no_args_is_help=True,
    rich_markup_mode="rich",
)


@download_app.command("eth3d", epilog=ETH3D_EPILOG)
@mapped_errors(interrupted=INTERRUPT_HINT)
def eth3d_command(
    scenes: ScenesOption = None,
    subset: Annotated[
        str | None, typer.Option("--subset", help="all | facades | indoor | outdoor (instead of --scenes).")
    ] = None,
    kinds: Annotated[
        str | None,
        typer.Option(
            "--kinds",
            help="Comma-separated archive kinds: undistorted, jpg, depth, occlusion, scan_eval "
            "(default: undistorted,jpg,depth,scan_eval: what evaluate and finetune need).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Dataset folder (default: $VGGTCTL_HOME/datasets/eth3d or the XDG cache)."
        ),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url", help="Mirror serving <scene>_dslr_<kind>.7z (default: https://www.eth3d.net/data/)."
        ),
    ] = None,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", min=1, max=16, help="Archives downloaded in parallel.")
    ] = 2,
    keep_archives: Annotated[
        bool,
        typer.Option(
            "--keep-archives", help="Keep the .7z files after extraction (with --synthetic: write them)."
        ),
    ] = False,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify/--no-verify",
            help="sha256 of downloads against pinned/recorded hashes; file sizes on re-runs.",
        ),
    ] = True,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="List archives, sizes, what is cached, bytes to fetch, disk needed."),
    ] = False,
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest",
            help='JSON {"<archive>.7z": {"bytes": N, "sha256": "..."}} replacing the pinned table.',
        ),
    ] = None,
    synthetic: Annotated[
        bool,
        typer.Option(
            "--synthetic", help="Render procedural scenes with exact ground truth instead (no network)."
        ),
    ] = False,
    views: Annotated[int, typer.Option("--views", min=1, help="With --synthetic: cameras per scene.")] = 6,
    seed: Annotated[int, typer.Option("--seed", help="With --synthetic: random seed.")] = 0,
    json_out: JsonOption = False,
) -> None:
    """Download ETH3D high-res multi-view scenes (per-scene 7z archives), verify and extract them.

    --scenes takes training scene names (default: all 13); with --synthetic, how many scenes (default 2).
    """
    from vggtctl.paths import check_home

    if out is None:
        check_home()
    output = Output(json_mode=json_out)
    try:
        if synthetic:
            data = _synthetic(",".join(split_list(scenes)) or None, subset, out, views, seed, keep_archives)
            output.result(data, lambda c: _render_synthetic(c, data))
            return
        from vggtctl.paths import eth3d_dir
        from vggtctl.services.eth3d_download import (
            BASE_URL,
            DownloadConfig,
            DownloadPlan,
            download_eth3d,
            resolve_kinds,
            resolve_scenes,
        )

        config = DownloadConfig(
            scenes=resolve_scenes(
                ",".join(split_list(scenes)) or None, subset, free_names=manifest is not None
            ),
            kinds=resolve_kinds(kinds),
            out=(out or eth3d_dir()).expanduser(),
            base_url=base_url or BASE_URL,
            jobs=jobs,
            keep_archives=keep_archives,
            verify=verify,
            dry_run=dry_run,
            manifest=manifest,
        )
        result = download_eth3d(config, output.progress())
    finally:
        output.close()
    if isinstance(result, DownloadPlan):
        data = {"dry_run": True, **result.to_dict()}
        output.result(data, lambda c: _render_plan(c, data))
    else:
        data = {"dry_run": False, **result.to_dict()}
        output.result(data, lambda c: _render_report(c, data))


def _synthetic(
    scenes: str | None, subset: str | None, out: Path | None, views: int, seed: int, archives: bool
) -> dict[str, Any]:
    from vggtctl.errors import Interrupted, UsageError, raise_problems
    from vggtctl.paths import datasets_dir, output_dir_problem
    from vggtctl.services.synthetic import check_synthetic, generate_scenes

    if subset:
        raise UsageError(
            "--subset does not apply to --synthetic", "vggtctl download eth3d --synthetic --scenes 2"
        )
    try:
        count = int(scenes) if scenes else 2
    except ValueError:
        raise UsageError(
            f"with --synthetic, --scenes is a count, got {scenes!r}",
            _SYNTH_EXAMPLE,
        ) from None
    folder = (out or datasets_dir() / "eth3d_synthetic").expanduser()
    # All bad values at once, and before the folder is created.
    problems = check_synthetic(count, views, seed) + list(filter(None, [output_dir_problem("out", folder)]))
    raise_problems("synthetic download settings", problems, "e.g. " + _SYNTH_EXAMPLE)
    try:
        paths = generate_scenes(folder, scenes=count, views=views, seed=seed, archives=archives)
    except KeyboardInterrupt:
        raise Interrupted("interrupted", SYNTHETIC_INTERRUPT_HINT) from None
    data: dict[str, Any] = {
        "synthetic": True,
        "out": str(folder),
        "scenes": [p.name for p in paths],
        "views": views,
        "seed": seed,
    }
    if archives:
        data["archives"] = str(folder / "archives")
        data["manifest"] = str(folder / "archives" / "manifest.json")
    return data


_SYNTH_EXAMPLE = "vggtctl download eth3d --synthetic --out demo_data --scenes 2 --views 6"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _render_plan(console: Any, d: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="ETH3D archives (dry run)", title_justify="left")
    for col in ("archive", "size", "size from", "on disk", "to fetch"):
        table.add_column(col, justify="right" if col in ("size", "to fetch") else "left")
    for a in d["archives"]:
        state = a["state"] if a["state"] != "partial" else f"partial ({bytes_si(a['have_bytes'])})"
        table.add_row(a["name"], bytes_si(a["bytes"]), a["size_source"], state, bytes_si(a["to_fetch"]))
    console.print(table)
    console.print(f"total {bytes_si(d['total_bytes'])}, to fetch {bytes_si(d['fetch_bytes'])}, "
                  f"disk needed {bytes_si(d['disk_needed'])} (free {bytes_si(d['disk_free'])})")  # fmt: skip
    console.print(f"into {d['out']}")


def _render_report(console: Any, d: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="ETH3D archives", title_justify="left")
    for col in ("archive", "size", "status", "files", "seconds"):
        table.add_column(col, justify="left" if col in ("archive", "status") else "right")
    for a in d["archives"]:
        status = a["status"] + (f" (resumed at {bytes_si(a['resumed_from'])})" if a["resumed_from"] else "")
        table.add_row(a["name"], bytes_si(a["bytes"]), status, str(a["files"] or ""), f"{a['seconds']:.1f}")
    console.print(table)
    console.print(f"downloaded {bytes_si(d['downloaded_bytes'])} in {d['seconds']:.1f} s")
    console.print(f"ETH3D data in: {d['out']}")


def _render_synthetic(console: Any, d: dict[str, Any]) -> None:
    console.print(
        f"{_plural(len(d['scenes']), 'synthetic scene')} ({_plural(d['views'], 'view')} each, seed {d['seed']}): "
        f"{', '.join(d['scenes'])}"
    )
    if "manifest" in d:
        console.print(f"archives: {d['archives']} (manifest: {d['manifest']})")
    console.print(f"ETH3D data in: {d['out']}")


def register(app: typer.Typer) -> None:
    """Add the ``download`` group (``eth3d``, ``weights``) to the root app."""
    from vggtctl.cli import download_weights

    if not any(c.name == "weights" for c in download_app.registered_commands):
        download_app.command("weights", help=download_weights.HELP, epilog=download_weights.EPILOG)(
            download_weights.weights_command
        )
    app.add_typer(download_app, name="download")
