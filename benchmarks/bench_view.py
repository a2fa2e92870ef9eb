"""`vggtctl view` with 1M points in headless Chromium: time to first frame and frames per second.

A synthetic predictions.npz (16 frames x 252x252 = 1,016,064 points, all shown: --conf-threshold 0%)
is served by the real viewer; Chromium (Debian's, driven by Playwright) opens it.

- time to first frame: from ``page.goto`` until the canvas shows the cloud (a screenshot of the canvas
  with more than 50 distinct colours, polled every 0.2 s, so it over-counts by up to one poll);
- frames per second: requestAnimationFrame callbacks per second while the mouse orbits the view for
  ``--seconds`` (each move re-renders the scene).

This machine has no GPU: WebGL runs on SwiftShader, a CPU renderer, so the numbers are a floor; the
renderer string is recorded. Usage: ``python benchmarks/bench_view.py [--points N] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import write_result  # noqa: E402
from tests.browser import browser_missing, chromium_page, distinct_colours  # noqa: E402
from vggtctl.services.viewer import ViewConfig, open_viewer  # noqa: E402

FPS_JS = """(ms) => new Promise(done => {
  let n = 0; const t0 = performance.now();
  const tick = () => { n++; if (performance.now() - t0 < ms) requestAnimationFrame(tick); else done(n * 1000 / (performance.now() - t0)); };
  requestAnimationFrame(tick);
})"""
RENDERER_JS = """() => { const gl = document.createElement('canvas').getContext('webgl2');
  const ext = gl && gl.getExtension('WEBGL_debug_renderer_info');
  return gl ? (ext ? gl.getParameter(ext.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER)) : 'no webgl2'; }"""


def synthetic_predictions(folder: Path, frames: int, side: int) -> Path:
    """A predictions.npz of a textured sphere seen by ``frames`` cameras on a ring (camera 0 = world)."""
    rng = np.random.default_rng(0)
    f = side * 1.1
    K = np.array([[f, 0, side / 2], [0, f, side / 2], [0, 0, 1]], np.float32)
    ext, pts, imgs = [], [], []
    v, u = np.mgrid[0:side, 0:side].astype(np.float32)
    for i in range(frames):
        a = 2 * np.pi * i / frames
        R = np.array([[np.cos(a), 0, -np.sin(a)], [0, 1, 0], [np.sin(a), 0, np.cos(a)]], np.float32)
        c = np.array([3 * np.sin(a), 0, 3 - 3 * np.cos(a)], np.float32)  # on a ring around (0, 0, 3)
        ext.append(np.c_[R, -R @ c])
        depth = 2.0 + 0.3 * np.sin(u / 17) * np.cos(v / 23) + rng.normal(0, 0.01, (side, side))
        ray = np.stack([(u - side / 2) / f, (v - side / 2) / f, np.ones_like(u)], -1)
        pts.append((ray * depth[..., None]) @ R + c)  # camera -> world: R.T @ x + c
        img = np.stack([u / side, v / side, 0.5 + 0.5 * np.sin(u / 9 + i)], 0)
        imgs.append(img)
    path = folder / "predictions.npz"
    np.savez(
        path,
        extrinsic=np.array(ext, np.float32),
        intrinsic=np.repeat(K[None], frames, 0),
        images=np.array(imgs, np.float32),
        image_size_hw=np.array([side, side]),
        world_points_from_depth=np.array(pts, np.float32),
        depth_conf=rng.uniform(1, 5, (frames, side, side)).astype(np.float32),
    )
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--side", type=int, default=252)
    ap.add_argument("--seconds", type=float, default=5.0)
    args, _ = ap.parse_known_args()
    missing = browser_missing()
    if missing:
        print(f"bench_view skipped: {missing}", file=sys.stderr)
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-view-"))
    try:
        npz = synthetic_predictions(work, args.frames, args.side)
        t0 = time.perf_counter()
        viewer = open_viewer(ViewConfig(str(npz), port=0, conf_threshold="0%", max_points=10**8))
        server_s = time.perf_counter() - t0
        points = sum(len(x) for x, _ in viewer.visible_points().values())
        try:
            with chromium_page(1280, 800) as (page, errors):
                t0 = time.perf_counter()
                page.goto(viewer.url)
                page.wait_for_selector("canvas", timeout=120_000)
                box = page.locator("canvas").first.bounding_box()
                while True:
                    # a page screenshot clipped to the canvas: an element screenshot waits for the
                    # element to be "stable", which a page busy drawing 1M points in software never is
                    colours = distinct_colours(page.screenshot(clip=box, timeout=120_000))
                    if colours > 50 or time.perf_counter() - t0 > 300:
                        break
                    page.wait_for_timeout(200)
                ttff = time.perf_counter() - t0
                renderer = page.evaluate(RENDERER_JS)
                idle_fps = page.evaluate(FPS_JS, 2000)
                cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
                page.mouse.move(cx, cy)
                page.mouse.down()
                fps_handle = page.evaluate_handle(FPS_JS, int(args.seconds * 1000))
                t_end = time.perf_counter() + args.seconds
                k = 0
                while time.perf_counter() < t_end:
                    k += 1
                    page.mouse.move(cx + 200 * np.sin(k / 10), cy + 40 * np.cos(k / 10))
                page.mouse.up()
                orbit_fps = float(fps_handle.json_value())
        finally:
            viewer.stop()
        result = {
            "points": points,
            "frames": args.frames,
            "server_build_s": round(server_s, 2),
            "time_to_first_frame_s": round(ttff, 2),
            "fps_orbiting": round(orbit_fps, 2),
            "fps_idle": round(float(idle_fps), 2),
            "renderer": renderer,
            "software_rendering": "swiftshader" in str(renderer).lower(),
            "console_errors": errors,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    path = write_result("view", result)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
