"""Ground-truth depth on the model grid for a full-resolution ETH3D-sized frame: before vs after.

The frame is synthetic at ETH3D's size: a 6048x4032 PINHOLE undistorted camera over a 5906x3938
THIN_PRISM_FISHEYE original (the synthetic generator's cameras, scaled), two frames of that camera, a
procedural depth map with slopes, step edges, sky (+inf) and a masked (2) region. Target: the model
grid of ``--image-size 518`` crop (518x350), what ``vggtctl evaluate`` uses.

Cases, each in its own process so peak RSS is that case's alone:

* ``before``: the old reader path (whole-image lookup tables kept per camera, then ``resample_depth``;
  frozen in ``tests/legacy_gt_depth.py``): frame 1 builds the tables, frame 2 reuses them;
* ``after``: ``vggtctl.data.depth.model_grid_depth``, band by band: frame 1 builds the distorted grid
  blocks, frame 2 reuses them (process-wide store, ~190 MB);
* ``after_lowmem``: the same with the grid store off (``GRID_CACHE_BYTES = 0``): nothing kept;
* ``after_cached``: ``vggtctl.data.sample.frame_depth`` reading the disk cache (entries written first).

Every case's result is compared with ``before``'s (bit for bit).

    .venv/bin/python benchmarks/bench_gt_depth.py [--width 6048 --height 4032]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import peak_rss_mb, write_result  # noqa: E402

CASES = ("before", "after", "after_lowmem", "after_cached")


def make_scene(root: Path, width: int, height: int) -> Path:
    """An ETH3D-layout scene folder with two frames of one camera and a procedural depth map."""
    from PIL import Image as PILImage

    from vggtctl.io.colmap import Image, rotmat_to_qvec, write_model_text
    from vggtctl.services.synthetic import _cameras

    scene = root / "full_res"
    dist, und = _cameras(np.random.default_rng([0, 0]), width, height)
    cam_d, cam_u = dist[0], und[0]
    images, dist_images = {}, {}
    for k, yaw in enumerate((0.0, 0.3)):
        c, s = np.cos(np.deg2rad(yaw)), np.sin(np.deg2rad(yaw))
        q = rotmat_to_qvec(np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]))
        t = np.array([0.1 * k, 0.0, 0.0])
        images[k] = Image(k, q, t, 0, f"dslr_images_undistorted/DSC_{k:04d}.JPG")
        dist_images[k] = Image(k, q, t, 0, f"dslr_images/DSC_{k:04d}.JPG")
    write_model_text(scene / "dslr_calibration_undistorted", {0: cam_u}, images, {})
    write_model_text(scene / "dslr_calibration_jpg", {0: cam_d}, dist_images, {})
    h, w = cam_d.height, cam_d.width
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    for k in range(2):
        depth = 4.0 + 3.0 * x / w + 0.4 * np.sin(y / 310.0 + k) + 0.2 * np.cos(x / 170.0)
        depth += 1.5 * ((((x + 97 * k) // 600) + (y // 450)) % 4 == 0)  # step edges
        depth[y < 0.08 * h + 0.05 * h * np.sin(x / 900.0)] = np.inf  # sky
        path = scene / "ground_truth_depth" / "dslr_images" / f"DSC_{k:04d}.JPG"
        path.parent.mkdir(parents=True, exist_ok=True)
        depth.astype("<f4").tofile(path)
        mask = np.zeros((h, w), np.uint8)
        mask[int(0.6 * h) : int(0.8 * h), int(0.3 * w) : int(0.4 * w)] = 2  # a passer-by
        mask[int(0.3 * h) : int(0.4 * h), int(0.6 * w) : int(0.7 * w)] = 1  # glass
        mpath = scene / "masks_for_images" / "dslr_images" / f"DSC_{k:04d}.png"
        mpath.parent.mkdir(parents=True, exist_ok=True)
        PILImage.fromarray(mask).save(mpath)
    return scene


def _geometry(frame: Any, image_size: int) -> Any:
    from vggtctl.data.preprocess import ImageGeometry, resized_size

    new_w, new_h = resized_size(frame.width, frame.height, "crop", image_size)
    crop = max(0, (new_h - image_size) // 2)
    return ImageGeometry(
        (frame.height, frame.width), (new_h, new_w), (0, -crop), (min(new_h, image_size), new_w)
    )


def run_case(case: str, scene_dir: Path, image_size: int, cache_dir: Path, out: Path) -> dict[str, Any]:
    """One case in this process: time per frame, peak RSS, the results saved for the comparison."""
    from vggtctl.data.eth3d import open_scene

    scene = open_scene(scene_dir)
    geoms = [_geometry(f, image_size) for f in scene.frames]
    for f in scene.frames:  # the inputs are read by every case: page them in before the baseline
        scene.raw_depth(f), scene.mask(f)
    base = peak_rss_mb()
    times, results = [], []
    if case == "before":
        from tests.legacy_gt_depth import legacy_model_grid_depth

        tables: dict = {}
        for f, g in zip(scene.frames, geoms, strict=True):
            t0 = time.perf_counter()
            results.append(legacy_model_grid_depth(scene, f, g, tables))
            times.append(time.perf_counter() - t0)
    elif case in ("after", "after_lowmem"):
        from vggtctl.data import depth as data_depth

        if case == "after_lowmem":
            data_depth.GRID_CACHE_BYTES = 0
        for f, g in zip(scene.frames, geoms, strict=True):
            cam_d, ext_d = scene.distorted_camera(f)
            t0 = time.perf_counter()
            d = data_depth.model_grid_depth(
                scene.raw_depth(f), scene.mask(f), scene.cameras[f.camera_id], f.extrinsic, cam_d, ext_d, g
            )
            results.append(d)
            times.append(time.perf_counter() - t0)
    elif case == "after_cached":
        from vggtctl.data.cache import DepthCache
        from vggtctl.data.sample import frame_depth

        cache = DepthCache(cache_dir)
        for f, g in zip(scene.frames, geoms, strict=True):
            t0 = time.perf_counter()
            results.append(frame_depth(scene, f, g, cache))
            times.append(time.perf_counter() - t0)
    else:
        raise SystemExit(f"unknown case {case!r}")
    np.save(out, np.stack(results))
    return {
        "seconds_per_frame": [round(t, 3) for t in times],
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "baseline_rss_mb": round(base, 1),
        "peak_over_baseline_mb": round(peak_rss_mb() - base, 1),
        "valid_fraction": round(float((results[0] > 0).mean()), 4),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def fill_cache(scene_dir: Path, image_size: int, cache_dir: Path) -> None:
    from vggtctl.data.cache import DepthCache
    from vggtctl.data.eth3d import open_scene
    from vggtctl.data.sample import frame_depth

    scene = open_scene(scene_dir)
    for f in scene.frames:
        frame_depth(scene, f, _geometry(f, image_size), DepthCache(cache_dir))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=6048)
    ap.add_argument("--height", type=int, default=4032)
    ap.add_argument("--image-size", type=int, default=518)
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    ap.add_argument("--case", help=argparse.SUPPRESS)  # worker mode
    ap.add_argument("--scene", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    ap.add_argument("--save", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case == "make":
        make_scene(Path(args.scene), args.width, args.height)
        return 0
    if args.case == "fill":
        fill_cache(Path(args.scene), args.image_size, Path(args.cache))
        return 0
    if args.case:
        result = run_case(args.case, Path(args.scene), args.image_size, Path(args.cache), Path(args.save))
        print(json.dumps(result))
        return 0
    # This process only spawns: Linux keeps ru_maxrss across fork+exec, so a parent that did the work
    # would lend its peak to every case.
    with tempfile.TemporaryDirectory(prefix="bench_gt_depth_") as tmp:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        scene, cache = Path(tmp) / "full_res", Path(tmp) / "cache"

        def spawn(case: str, *extra: str) -> str:
            where = scene.parent if case == "make" else scene
            cmd = [sys.executable, __file__, "--case", case, "--scene", str(where), "--cache", str(cache),
                   "--image-size", str(args.image_size), "--width", str(args.width),
                   "--height", str(args.height), *extra]  # fmt: skip
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if res.returncode:
                raise SystemExit(f"{case} failed:\n{res.stderr}")
            return res.stdout

        t0 = time.perf_counter()
        spawn("make")
        print(f"scene written in {time.perf_counter() - t0:.1f} s", flush=True)
        cases: dict[str, Any] = {}
        for case in args.cases:
            if case == "after_cached":
                spawn("fill")
            out = spawn(case, "--save", str(Path(tmp) / f"{case}.npy"))
            cases[case] = json.loads(out.strip().splitlines()[-1])
            print(case, cases[case], flush=True)
        if "before" in cases:
            ref = np.load(Path(tmp) / "before.npy")
            for case in cases:
                cases[case]["equal_to_before"] = bool(np.array_equal(np.load(Path(tmp) / f"{case}.npy"), ref))
    path = write_result(
        "gt_depth",
        {
            "frame": {
                "undistorted": [args.width, args.height],
                "model_grid": "crop",
                "image_size": args.image_size,
            },
            "cases": cases,
            "note": "seconds_per_frame: frame 1 (cold), frame 2 (same camera); peak RSS per case process",
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
