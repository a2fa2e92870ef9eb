"""`vggtctl app`: a local web page (Gradio) that runs infer on dropped images and shows the result."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vggtctl.cli.errors import mapped_errors
from vggtctl.cli.options import DeviceOption, Dtype, DtypeOption, HostOption, JsonOption, PortOption
from vggtctl.cli.output import Output
from vggtctl.cli.serving import serve_until_stopped
from vggtctl.defaults import DEFAULT_REPO

EPILOG = """\
Examples:

  vggtctl app --model tiny

  vggtctl app --model facebook/VGGT-1B --model tiny --device cuda --dtype bf16

  vggtctl app --port 7861 --out app_runs

  vggtctl app --host 0.0.0.0 --model ./weights/model.safetensors
"""


@mapped_errors(interrupted="the app stopped; runs under --out are kept, a temporary folder was removed")
def app_command(
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="Model choice(s) in the page (repeatable; the first is preselected): Hub repo id, "
            "local file or folder, or 'tiny'. Default: facebook/VGGT-1B and tiny.",
        ),
    ] = None,
    port: PortOption = 7860,
    host: HostOption = "127.0.0.1",
    device: DeviceOption = "auto",
    dtype: DtypeOption = Dtype.auto,
    max_frames: Annotated[int, typer.Option("--max-frames", help="Refuse uploads of more frames.")] = 100,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Keep each request's files in OUT/run_NNNN (default: a temporary folder)."
        ),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Serve a page: drop images or a video, pick a model, see points + cameras, download the outputs."""
    from vggtctl.services.webapp import AppConfig, open_app

    config = AppConfig(
        host=host,
        port=port,
        models=list(models) if models else [DEFAULT_REPO, "tiny"],
        device=device,
        dtype=dtype.value,
        max_frames=max_frames,
        out=out,
    )
    output = Output(json_mode=json_out)
    app = open_app(config)
    try:
        result = {
            "url": app.url,
            "host": host,
            "port": app.port,
            "models": config.models,
            "out": str(app.out),
        }
        output.result(
            result, lambda c: c.print(f"{app.url}  (models: {', '.join(config.models)})", markup=False)
        )
    except BaseException:
        app.stop()
        raise
    serve_until_stopped(output, app.stop, "the app")


def register(app: typer.Typer) -> None:
    """Add ``app`` to the root app."""
    app.command("app", epilog=EPILOG, help="Local web page: images in, 3D reconstruction out (Gradio).")(
        app_command
    )
