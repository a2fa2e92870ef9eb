"""Bundle adjustment (`vggtctl colmap refine`, `infer --bundle-adjust`): time and reprojection error before/after.

A synthetic ring of --views PINHOLE cameras (640x480, f = 500) around --points points; every camera is
rotated by ~--rot-deg degrees and shifted by ~--trans (the ring has radius 4), points jittered by
--point-noise, the start a feed-forward prediction gives. Observations are the exact projections, plus
Gaussian pixel noise of --pixel-noise px in a second run (what real tracks look like). Reported per run:
reprojection error before/after (mean, median), camera rotation / centre error after the best similarity
(the gauge), the adjuster's time alone and `refine_model` end to end (read, adjust, write).

    python benchmarks/bench_bundle_adjust.py [--views 24] [--points 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import peak_rss_mb, write_result  # noqa: E402
from vggtctl.io.colmap import read_model  # noqa: E402
from vggtctl.services.bundle_adjust import BundleAdjustConfig, refine_model  # noqa: E402
from vggtctl.services.bundle_adjust_synthetic import perturbed, pose_errors, ring_scene  # noqa: E402


def _run(scene, truth, folder: Path, refine_focal: bool, repeat: int) -> dict:  # noqa: ANN001
    scene.write(folder / "in")
    config = BundleAdjustConfig(refine_focal_length=refine_focal)
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        report = refine_model(folder / "in", folder / "out", config)
        wall = time.perf_counter() - t0
        if best is None or wall < best[0]:
            best = (wall, report)
    wall, report = best  # type: ignore[misc]
    _, images, _ = read_model(folder / "out")
    ext = np.stack([images[i].extrinsic() for i in sorted(images)])
    rot0, c0 = pose_errors(scene.extrinsic, truth.extrinsic)
    rot, c = pose_errors(ext, truth.extrinsic)
    return {
        "refined": report.refined,
        "observations": report.observations,
        "error_before_px": {"mean": report.error_before_px, "median": report.median_error_before_px},
        "error_after_px": {"mean": report.error_after_px, "median": report.median_error_after_px},
        "rotation_error_deg": {"before_max": float(rot0.max()), "after_max": float(rot.max())},
        "centre_error": {"before_max": float(c0.max()), "after_max": float(c.max())},
        "adjust_s": report.time_s,
        "refine_model_s": round(wall, 4),
        "termination": report.termination,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--views", type=int, default=24)
    ap.add_argument("--points", type=int, default=2000)
    ap.add_argument("--rot-deg", type=float, default=1.0)
    ap.add_argument("--trans", type=float, default=0.05)
    ap.add_argument("--point-noise", type=float, default=0.02)
    ap.add_argument("--pixel-noise", type=float, default=0.5)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    truth = ring_scene(args.views, args.points, seed=0)
    start = perturbed(truth, args.rot_deg, args.trans, args.point_noise, seed=1)
    noisy = replace(
        start, obs_xy=start.obs_xy + np.random.default_rng(2).normal(0, args.pixel_noise, start.obs_xy.shape)
    )
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_ba_") as tmp:
        for name, scene, focal in (
            ("exact_fixed_focal", start, False),
            ("exact_refine_focal", start, True),
            (f"noise_{args.pixel_noise}px_fixed_focal", noisy, False),
        ):
            row = _run(scene, truth, Path(tmp) / name, focal, args.repeat)
            results[name] = row
            print(f"{name:28s} error {row['error_before_px']['mean']:.3f} -> {row['error_after_px']['mean']:.2e} px, "
                  f"rotation {row['rotation_error_deg']['before_max']:.3f} -> {row['rotation_error_deg']['after_max']:.2e} deg, "
                  f"adjust {row['adjust_s']:.3f} s, end to end {row['refine_model_s']:.3f} s")  # fmt: skip
    path = write_result(
        "bundle_adjust",
        {
            "views": args.views,
            "points": args.points,
            "perturbation": {"rot_deg": args.rot_deg, "trans": args.trans, "point_noise": args.point_noise},
            "pixel_noise_px": args.pixel_noise,
            "repeat": args.repeat,
            "results": results,
            "peak_rss_mb": round(peak_rss_mb(), 1),
        },
    )
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
