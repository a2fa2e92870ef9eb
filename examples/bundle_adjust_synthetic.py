"""Bundle adjustment on a synthetic scene with exact cameras: perturb, refine with COLMAP's adjuster, compare.

    PYTHONPATH=. python examples/bundle_adjust_synthetic.py [OUT_DIR]

Writes OUT_DIR/start (the perturbed COLMAP model, with tracks) and OUT_DIR/refined (what
`vggtctl colmap refine OUT_DIR/start --out OUT_DIR/refined` writes), and prints the errors before and after.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from vggtctl.io.colmap import read_model
from vggtctl.services.bundle_adjust import BundleAdjustConfig, refine_model
from vggtctl.services.bundle_adjust_synthetic import perturbed, pose_errors, ring_scene


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "ba_example")
    truth = ring_scene(views=24, points=500, seed=0)
    start = perturbed(truth, rot_deg=1.0, trans=0.05, point_noise=0.02, seed=1)
    start.write(out / "start")
    report = refine_model(out / "start", out / "refined", BundleAdjustConfig(refine_focal_length=False))
    _, images, _ = read_model(out / "refined")
    refined = np.stack([images[i].extrinsic() for i in sorted(images)])
    rot0, c0 = pose_errors(start.extrinsic, truth.extrinsic)
    rot1, c1 = pose_errors(refined, truth.extrinsic)
    print(f"{report.observations} observations in {report.images} images: {report.reason}")
    print(
        f"max rotation error {rot0.max():.3f} -> {rot1.max():.2e} deg, max centre error {c0.max():.4f} -> {c1.max():.2e}"
    )
    print(f"adjusted in {report.time_s:.2f} s; models in {out}/start and {out}/refined")
    return 0 if report.refined else 1


if __name__ == "__main__":
    sys.exit(main())
