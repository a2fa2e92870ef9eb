"""``vggtctl app``: a local Gradio page around :func:`vggtctl.services.webapp_run.reconstruct`.

One server, one :class:`~vggtctl.services.webapp_run.ModelCache` (each model choice loads once), and a
queue with one worker: concurrent requests wait their turn instead of running the model twice at once.
Errors of a request (an upload that is not an image, too many frames) are shown in the page as the CLI
words them (``Error:`` and ``Hint:``); the server keeps running.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vggtctl.defaults import DEFAULT_REPO
from vggtctl.errors import UsageError, VggtctlError
from vggtctl.services.serving import LOOPBACK, check_port_free, free_port, url_for
from vggtctl.services.webapp_run import AppRequest, ModelCache, reconstruct

# infer's stages in order, for the page's progress bar (run_inference reports "[stage] 0.12s" lines).
STAGES = (
    "model",
    "collect inputs",
    "load images",
    "preprocess",
    "forward",
    "write npz",
    "select points",
    "write ply",
    "write colmap",
)
# System fonts: Gradio's default theme fetches Google Fonts, which an offline machine cannot reach.
FONTS = ("ui-sans-serif", "system-ui", "sans-serif")
MONO_FONTS = ("ui-monospace", "monospace")


@dataclass
class AppConfig:
    """What ``vggtctl app`` was asked for (defaults = the CLI's)."""

    host: str = LOOPBACK
    port: int = 7860
    models: list[str] = field(default_factory=lambda: [DEFAULT_REPO, "tiny"])
    device: str = "auto"
    dtype: str = "auto"
    max_frames: int = 100
    out: Path | None = None  # where runs go; None: a temporary folder removed when the server stops

    def validate(self) -> None:
        from vggtctl.utils.devices import device_problem

        if not self.models:
            raise UsageError("no model to offer", "pass --model tiny or --model facebook/VGGT-1B")
        problem = device_problem(self.device)
        if problem is not None:
            raise UsageError(f"--device {self.device!r} is {problem}", "use auto, cpu, cuda or cuda:N")
        if self.max_frames < 1:
            raise UsageError(f"--max-frames {self.max_frames}: must be >= 1", "e.g. --max-frames 100")


class _PageProgress:
    """vggtctl's Progress protocol onto Gradio's progress bar (fraction = stages done)."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def task(self, description: str, total: float | None = None, unit: str = "it") -> Any:
        from vggtctl.progress import NULL_PROGRESS

        return NULL_PROGRESS.task(description, total, unit)

    def log(self, message: str) -> None:
        if message.startswith("["):
            stage = message[1:].split("]", 1)[0]
            done = STAGES.index(stage) + 1 if stage in STAGES else 0
            self.bar(done / len(STAGES), desc=message)


class WebApp:
    """The Gradio page and its server; :meth:`stop` ends it and removes a temporary output folder."""

    def __init__(self, config: AppConfig) -> None:
        os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local tool
        import gradio as gr

        self.config = config
        self.cache = ModelCache()
        self._temp = config.out is None
        self.out = Path(tempfile.mkdtemp(prefix="vggtctl-app-")) if config.out is None else Path(config.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self._counter = itertools.count(1)
        self._counter_lock = threading.Lock()
        self.gr = gr
        self.blocks = self._build(gr)
        self.port = config.port
        self.url = ""
        # (start, end) of every request, monotonic seconds: what shows that the queue runs one at a time
        self.request_times: list[tuple[float, float]] = []

    def _next_run_dir(self) -> Path:
        with self._counter_lock:
            while True:
                d = self.out / f"run_{next(self._counter):04d}"
                if not d.exists():
                    d.mkdir(parents=True)
                    return d

    def run(
        self, files: Any, model: str, mode: str, points: str, conf: str, progress: Any
    ) -> tuple[Any, ...]:
        """One request: the page's inputs in, (status, GLB, download files) out."""
        names = [getattr(f, "name", f) for f in (files or [])]
        request = AppRequest(
            files=[str(n) for n in names],
            model=model,
            device=self.config.device,
            dtype=self.config.dtype,
            mode=mode,
            points=points,
            conf_threshold=conf,
            max_frames=self.config.max_frames,
        )
        t0 = time.monotonic()
        try:
            result = reconstruct(request, self._next_run_dir(), self.cache, _PageProgress(progress))
        except VggtctlError as e:
            hint = f"\n\nHint: {e.hint}" if e.hint else ""
            return f"**Error:** {e.message}{hint}", None, None
        finally:
            self.request_times.append((t0, time.monotonic()))
        downloads = [result.npz, result.ply, result.colmap_zip]
        return f"**Done.** {result.summary}", result.glb, downloads

    def _build(self, gr: Any) -> Any:
        models = list(dict.fromkeys(self.config.models))
        with gr.Blocks(title="vggtctl app", analytics_enabled=False) as blocks:
            gr.Markdown(
                "# vggtctl: images or a video in, cameras + points out\n"
                "Drop images (or one video), pick the model (`tiny` is random weights for trying the page "
                "out), and run VGGT: one forward pass over all frames, as `vggtctl infer` does."
            )
            with gr.Row():
                with gr.Column(scale=1):
                    files = gr.File(label="images or a video", file_count="multiple", elem_id="uploads")
                    model = gr.Dropdown(models, value=models[0], label="model", elem_id="model")
                    mode = gr.Radio(["crop", "pad"], value="crop", label="preprocessing")
                    points = gr.Radio(["depth", "head"], value="depth", label="points from")
                    conf = gr.Textbox("50%", label="confidence threshold (N% = percentile)")
                    button = gr.Button("Reconstruct", variant="primary", elem_id="run")
                with gr.Column(scale=2):
                    status = gr.Markdown("Upload images, then press Reconstruct.", elem_id="status")
                    scene = gr.Model3D(label="points and cameras (GLB)", elem_id="scene", height=480)
                    downloads = gr.File(label="downloads: predictions.npz, points.ply, colmap.zip",
                                        elem_id="downloads", interactive=False)  # fmt: skip

            def handler(f: Any, m: str, md: str, p: str, c: str, progress: Any = gr.Progress()) -> Any:
                return self.run(f, m, md, p, c, progress)

            button.click(
                handler,
                api_name="reconstruct",
                inputs=[files, model, mode, points, conf],
                outputs=[status, scene, downloads],
            )
        # One worker: a second request waits in the queue (the page shows its position).
        blocks.queue(default_concurrency_limit=1)
        return blocks

    def start(self) -> str:
        """Start serving (returns at once); returns the URL."""
        gr = self.gr
        check_port_free(self.config.host, self.config.port)
        # Gradio reads a port of None as "scan from 7860": --port 0 means any free port, so pick one.
        port = self.config.port or free_port(self.config.host)
        theme = gr.themes.Default(font=list(FONTS), font_mono=list(MONO_FONTS))
        self.blocks.launch(
            server_name=self.config.host,
            server_port=port,
            prevent_thread_lock=True,
            quiet=True,
            share=False,
            inbrowser=False,
            show_error=True,
            allowed_paths=[str(self.out)],
            ssr_mode=False,
            mcp_server=False,
            enable_monitoring=False,
            theme=theme,
        )
        self.port = int(self.blocks.server_port)
        self.url = url_for(self.config.host, self.port)
        return self.url

    def stop(self) -> None:
        """Stop the server; remove the temporary output folder (a given ``--out`` stays)."""
        with contextlib.suppress(Exception):  # closing a half-started server must not hide the first error
            self.blocks.close()
        if self._temp:
            shutil.rmtree(self.out, ignore_errors=True)


def open_app(config: AppConfig) -> WebApp:
    """Build and start the page (``vggtctl app``); the caller must :meth:`WebApp.stop` it.

    Raises:
        UsageError: Bad settings.
        PortInUseError: The port is taken.
    """
    config.validate()
    check_port_free(config.host, config.port)  # before Gradio's import (seconds) and the page build
    app = WebApp(config)
    try:
        app.start()
    except BaseException:
        app.stop()
        raise
    return app
