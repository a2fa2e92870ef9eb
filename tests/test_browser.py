"""The two pages in a real headless Chromium (software WebGL): no console errors, a 3-D canvas that
draws something, and the app's whole round trip (upload the synthetic scene, reconstruct, download)."""

from __future__ import annotations

import glob
import urllib.request
from pathlib import Path

import pytest

from tests.browser import chromium_page, distinct_colours
from tests.servers import served

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# A blank WebGL canvas is one colour; a cleared one with an axis gizmo a handful. Points coloured by
# their images and textured frustums give hundreds.
MIN_COLOURS = 50


def _canvas_colours(page: object) -> int:
    canvas = page.locator("canvas").first  # type: ignore[attr-defined]
    return distinct_colours(canvas.screenshot())


@pytest.mark.timeout(240)
def test_viewer_page_draws_the_scene_without_console_errors(tiny_run: Path) -> None:
    with served("view", tiny_run, "--port", 0) as (proc, url), chromium_page() as (page, errors):
        page.goto(url)
        page.wait_for_selector("canvas", timeout=60_000)
        page.get_by_text("(predictions)").first.wait_for(timeout=60_000)  # the panel arrived
        page.wait_for_timeout(3000)  # the point clouds and textures stream in after the panel
        colours = _canvas_colours(page)
        assert errors == []
        assert colours > MIN_COLOURS, f"canvas looks blank: {colours} colours"


@pytest.mark.timeout(240)
def test_snapshot_opens_from_a_file_without_a_server(tiny_run: Path, tmp_path: Path) -> None:
    from tests.helpers_cli import run_cli

    html = tmp_path / "scene.html"
    assert run_cli("view", tiny_run, "--snapshot", html).exit_code == 0
    with chromium_page() as (page, errors):
        page.goto(html.as_uri())
        page.wait_for_selector("canvas", timeout=60_000)
        page.wait_for_timeout(4000)
        colours = _canvas_colours(page)
        assert errors == []
        assert colours > MIN_COLOURS, f"canvas looks blank: {colours} colours"


@pytest.mark.timeout(300)
def test_app_upload_gives_a_reconstruction_and_download_links(
    synthetic_root: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    images = sorted(glob.glob(str(synthetic_root / "synth_000/images/dslr_images_undistorted/*.JPG")))[:4]
    args = ("app", "--model", tiny_checkpoint, "--device", "cpu", "--dtype", "fp32", "--port", 0)
    with served(*args, "--out", tmp_path / "runs") as (proc, url), chromium_page() as (page, errors):
        page.goto(url)
        page.wait_for_selector("#uploads input[type=file]", state="attached", timeout=60_000)
        page.locator("#uploads input[type=file]").set_input_files(images)
        page.get_by_text("DSC_0003").first.wait_for(timeout=60_000)  # the upload finished
        page.click("#run")
        page.wait_for_selector("#downloads a", timeout=180_000)
        status = page.inner_text("#status")
        links = [a.get_attribute("href") or "" for a in page.query_selector_all("#downloads a")]
        page.wait_for_timeout(3000)  # the GLB loads into Babylon.js after the links show
        colours = _canvas_colours(page)
        assert errors == [], errors
        assert "Done. 4 frames at 168x112" in status
        href = next(h for h in links if h.endswith("/predictions.npz"))
        with urllib.request.urlopen(href if href.startswith("http") else url.rstrip("/") + href) as r:  # noqa: S310
            assert r.read(2) == b"PK"  # an npz is a zip
        assert any(h.endswith("/colmap.zip") for h in links) and any(h.endswith("/points.ply") for h in links)
        assert colours > MIN_COLOURS, f"3-D view looks blank: {colours} colours"


@pytest.mark.timeout(240)
def test_app_shows_a_non_image_upload_as_an_error_in_the_page(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    with served("app", "--model", "tiny", "--port", 0) as (proc, url), chromium_page() as (page, errors):
        page.goto(url)
        page.wait_for_selector("#uploads input[type=file]", state="attached", timeout=60_000)
        page.locator("#uploads input[type=file]").set_input_files([str(notes)])
        page.get_by_text("notes").first.wait_for(timeout=60_000)
        page.click("#run")
        page.get_by_text("not an image or a video: notes.txt").wait_for(timeout=60_000)
        assert "Hint: upload images" in page.inner_text("#status")
        assert errors == []
