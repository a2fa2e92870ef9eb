"""Write a test reconstruction for `vggtctl evaluate --reconstruction`: a scene's laser-scan points in the
scan world frame with Gaussian noise, part of them removed, so its ETH3D scores are known to be < 1.

    python examples/noisy_scan_cloud.py ETH3D_ROOT SCENE OUT.ply [--noise 0.01] [--keep 0.7]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vggtctl.data.eth3d import read_scans  # noqa: E402
from vggtctl.io.ply import write_ply  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("scene")
    ap.add_argument("out", type=Path)
    ap.add_argument("--noise", type=float, default=0.01, help="σ per axis, metres")
    ap.add_argument("--keep", type=float, default=0.7, help="fraction of the points kept")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    pts = np.concatenate([s.world_points() for s in read_scans(args.root / args.scene)]).astype(np.float64)
    pts = pts[rng.random(len(pts)) < args.keep]
    write_ply(args.out, pts + rng.normal(scale=args.noise, size=pts.shape))
    print(f"{len(pts)} points -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
