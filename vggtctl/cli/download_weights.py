"""`vggtctl download weights`: VGGT weights from the Hub (or the seeded tiny checkpoint, generated).

The ``download`` command group (``vggtctl/cli/download.py``) registers :func:`weights_command` as
``download weights``.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any

import typer

from vggtctl.cli.errors import mapped_errors
from vggtctl.cli.options import JsonOption, PresetOption, RevisionOption
from vggtctl.cli.output import Output
from vggtctl.defaults import DEFAULT_REPO
from vggtctl.utils.fmt import bytes_si

EPILOG = """\
Examples:

  vggtctl download weights

  vggtctl download weights --repo facebook/VGGT-1B --revision main --dry-run

  vggtctl download weights --local-dir ./weights --json

  vggtctl download weights --preset tiny --local-dir ./weights
"""

INTERRUPT_HINT = "re-run the same command to resume: the Hub download continues where it stopped"

HELP = "VGGT weights from the Hugging Face Hub (cached, resumable), or the seeded tiny checkpoint."


@mapped_errors(interrupted=INTERRUPT_HINT)
def weights_command(
    repo: Annotated[str, typer.Option("--repo", help="Hub repo id.")] = DEFAULT_REPO,
    revision: RevisionOption = None,
    local_dir: Annotated[
        Path | None, typer.Option("--local-dir", help="Put the file in this folder instead of the HF cache.")
    ] = None,
    preset: PresetOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the file, its size and whether it is cached.")
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Download VGGT weights and print the local path and sha256 that --model takes."""
    from vggtctl.errors import raise_problems
    from vggtctl.paths import output_dir_problem
    from vggtctl.services.weights import download_weights

    if local_dir is not None:  # before any network, and the same for --dry-run
        raise_problems(
            "download weights settings",
            list(filter(None, [output_dir_problem("local_dir", local_dir)])),
            "give a folder, e.g. --local-dir ./weights",
        )
    output = Output(json_mode=json_out)
    try:
        result = download_weights(
            repo, revision, local_dir=local_dir, preset=preset, dry_run=dry_run, progress=output.progress()
        )
    finally:
        output.close()
    data = result.to_dict()
    data["dry_run"] = dry_run
    output.result(data, lambda console: _render(console, data))


def _render(console: Any, d: dict[str, Any]) -> None:
    what = d["repo"] + (f"@{d['revision']}" if d["revision"] else "") if d["repo"] else "tiny (generated)"
    if d["dry_run"]:
        state = (
            "cached"
            if d["cached"]
            else "not cached: would download"
            if d["source"] == "hub"
            else "would write"
        )
        console.print(f"{what}: {d['filename']} ({bytes_si(d['size'], 'size unknown')}), {state}")
        console.print(f"path: {d['path']}")
        if d["sha256"]:
            console.print(f"sha256: {d['sha256']}")
        return
    verb = (
        "generated" if d["source"] == "generated" else "downloaded" if d["downloaded"] else "already cached"
    )
    console.print(f"{what}: {d['filename']} ({bytes_si(d['size'], 'size unknown')}) {verb}")
    if d["commit"]:
        console.print(f"commit: {d['commit']}")
    console.print(f"path: {d['path']}")
    console.print(f"sha256: {d['sha256']}")
    # Quoted for copy-paste: cache and --local-dir paths may hold spaces.
    console.print(f"use it: vggtctl infer IMAGES --model {shlex.quote(str(d['path']))}")
