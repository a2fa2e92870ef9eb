"""COLMAP export of `vggtctl infer`: write time of a 500k-point model, text vs binary, and reading it back.

The model is what `infer` writes for --frames views: one PINHOLE camera per image, world-to-camera poses and
--points trackless coloured points (float32 coordinates, as the model predicts them). Measured, best of
--repeat, each into a fresh folder (atomic writes with fsync included, as in `infer`):
  txt_objects: the text writer fed one Point3D per point (what `infer` did before binary export existed);
  txt:         the text writer fed the point arrays (what `infer --colmap-format txt` does now);
  bin:         the binary writer (what `infer` does by default now);
and reading each model back with vggtctl's reader and with pycolmap (when installed).

    python benchmarks/bench_colmap.py [--points 500000] [--frames 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import peak_rss_mb, write_result  # noqa: E402
from vggtctl.io.colmap import Point3D, read_model, write_model_text  # noqa: E402
from vggtctl.io.colmap_export import build_model, write_prediction_model  # noqa: E402


def _scene(points: int, frames: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    angles = np.linspace(0, 2 * np.pi, frames, endpoint=False)
    extrinsic = np.zeros((frames, 3, 4))
    for i, a in enumerate(angles):
        c, s = np.cos(a), np.sin(a)
        extrinsic[i, :, :3] = [[c, 0, -s], [0, 1, 0], [s, 0, c]]
        extrinsic[i, :, 3] = [0.1 * i, -0.2, 3.0]
    K = np.array([[600.0, 0, 259.0], [0, 601.0, 196.0], [0, 0, 1]])
    return {
        "extrinsic": extrinsic,
        "intrinsic": np.repeat(K[None], frames, axis=0),
        "sizes_hw": [(392, 518)] * frames,
        "names": [f"frame_{i:04d}.png" for i in range(frames)],
        "xyz": rng.normal(size=(points, 3)).astype(np.float32),
        "rgb": rng.integers(0, 256, (points, 3), dtype=np.uint8),
    }


def _write_objects(folder: Path, sc: dict) -> None:
    """The pre-binary export: one Point3D per point, then the text writer."""
    cameras, images = build_model(sc["extrinsic"], sc["intrinsic"], sc["sizes_hw"], sc["names"])
    xs, cs, none = sc["xyz"].astype(np.float64).tolist(), sc["rgb"].tolist(), np.zeros(0, dtype=np.int64)
    pts = {j + 1: Point3D(j + 1, xs[j], cs[j], 0.0, none, none) for j in range(len(xs))}  # type: ignore[arg-type]
    write_model_text(folder, cameras, images, pts)


def _best(fn, repeat: int) -> float:  # noqa: ANN001 - a benchmark helper
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=500_000)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sc = _scene(args.points, args.frames)
    writers = {
        "txt_objects": lambda d: _write_objects(d, sc),
        "txt": lambda d: write_prediction_model(d, **sc, fmt="txt"),
        "bin": lambda d: write_prediction_model(d, **sc, fmt="bin"),
    }
    try:
        import pycolmap
    except ImportError:
        pycolmap = None
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_colmap_") as tmp:
        for name, write in writers.items():
            folder = Path(tmp) / name

            def once(folder: Path = folder, write=write) -> None:  # noqa: ANN001
                shutil.rmtree(folder, ignore_errors=True)
                write(folder)

            seconds = _best(once, args.repeat)
            size = sum(p.stat().st_size for p in folder.iterdir())
            row = {
                "write_s": round(seconds, 4),
                "write_us_per_point": round(seconds / args.points * 1e6, 3),
                "bytes": size,
                "read_vggtctl_s": round(_best(lambda folder=folder: read_model(folder), 1), 3),
            }
            if pycolmap is not None:
                row["read_pycolmap_s"] = round(
                    _best(lambda folder=folder: pycolmap.Reconstruction(str(folder)), 1), 3
                )
            results[name] = row
            print(f"{name:12s} write {seconds:7.3f} s ({row['write_us_per_point']:.2f} us/point), "
                  f"{size / 1e6:6.1f} MB, read {row['read_vggtctl_s']:.2f} s"
                  + (f", pycolmap {row['read_pycolmap_s']:.2f} s" if "read_pycolmap_s" in row else ""))  # fmt: skip
    speedup = results["txt"]["write_s"] / results["bin"]["write_s"]
    path = write_result(
        "colmap",
        {
            "points": args.points,
            "frames": args.frames,
            "repeat": args.repeat,
            "results": results,
            "bin_vs_txt_write_speedup": round(speedup, 1),
            "bin_vs_txt_objects_write_speedup": round(
                results["txt_objects"]["write_s"] / results["bin"]["write_s"], 1
            ),
            "pycolmap": getattr(pycolmap, "__version__", None),
            "peak_rss_mb": round(peak_rss_mb(), 1),
        },
    )
    print(f"binary writes {speedup:.1f}x faster than text; {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
