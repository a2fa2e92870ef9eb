"""A real headless Chromium for the ``browser`` tests: Playwright's Python API driving the system browser.

Chromium comes from Debian (``apt-get install -y chromium``, as ``.ci/run`` does); Playwright's own browser
download is not needed. WebGL runs on SwiftShader (software), which is what this machine has.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
# SwiftShader: WebGL in software, this machine has no GPU.
CHROMIUM_ARGS = ("--no-sandbox", "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader")
# Babylon.js (Gradio's Model3D) picks WebGPU whenever navigator.gpu exists; with no GPU adapter (SwiftShader
# gives none that works for it) it logs "A fatal error occurred during WebGPU creation" and falls back to
# WebGL. The pages are tested as a browser without WebGPU sees them: Babylon goes to WebGL directly.
NO_WEBGPU = "delete Navigator.prototype.gpu;"


def chromium_path() -> str | None:
    env = os.environ.get("VGGTCTL_CHROMIUM")
    if env:
        return env
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def browser_missing() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install -e '.[dev]')"
    if chromium_path() is None:
        return "no Chromium on PATH (apt-get install -y chromium, or set VGGTCTL_CHROMIUM)"
    return None


@contextlib.contextmanager
def chromium_page(width: int = 1000, height: int = 700) -> Iterator[tuple[Any, list[str]]]:
    """A fresh page and the list its console errors and uncaught exceptions are appended to."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.add_init_script(NO_WEBGPU)
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
            yield page, errors
        finally:
            browser.close()


def distinct_colours(png: bytes) -> int:
    """How many distinct RGB colours a PNG screenshot holds (a blank canvas has one or two)."""
    import cv2
    import numpy as np

    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    return int(len(np.unique(img.reshape(-1, 3), axis=0)))
