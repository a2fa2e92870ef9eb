"""train-vln step time broken down: data wait, VGGT, Qwen forward+backward, optimizer (tiny models on CPU).

Runs the real training loop (``train_vln``, in-process) on a generated trajectory set with the tiny
Qwen2.5-VL (``train-vln init-tiny``) and the seeded tiny VGGT, and reads the breakdown from the run's
``metrics.jsonl`` (the first step, which pays one-off costs, is left out). Frames are 640x480 and
preprocessed to width ``--width`` (644 = JanusVLN: 490x644, 35x46 VGGT patches, 391 LLM tokens per image).

The "cached" half builds the VGGT feature cache for the same data (``vggtctl cache build``'s service,
bf16 storage) and runs the same steps with ``cache_dir`` set: its ``vggt_time`` is what the cache leaves
of VGGT. On a GPU machine pass ``--device cuda`` (not measured here; no GPU was lent).

    python benchmarks/bench_train_vln.py [--steps 4] [--width 644] [--frames 9] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import peak_rss_mb, write_result  # noqa: E402

KEYS = ("step_time", "data_time", "vggt_time", "fwd_bwd_time", "optim_time")


def _breakdown(run_dir: Path, wall: float) -> dict:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][1:]
    per_step = {k: statistics.median(r[k] for r in records) for k in KEYS}
    return {
        "steps_measured": len(records),
        "samples_per_step": records[0]["batch_size"],
        "median_s": per_step,
        "share": {k: per_step[k] / per_step["step_time"] for k in KEYS[1:]},
        "samples_per_s": statistics.median(r["samples_per_s"] for r in records),
        "cache_hit_ratio": records[-1]["cache_hit_ratio"],
        "wall_s": wall,
    }


def run(steps: int, width: int, frames: int, device: str, workers: int) -> dict:
    from vggtctl.services.vln.config import VlnTrainConfig
    from vggtctl.services.vln.synthetic import write_trajectories
    from vggtctl.services.vln.tiny_qwen import write_tiny_qwen
    from vggtctl.services.vln.train import train_vln
    from vggtctl.services.vlncache.build import BuildConfig, build_cache

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        qwen = write_tiny_qwen(root / "qwen").path
        # Episodes long enough that most samples carry `frames` images (the history rule caps at 9).
        write_trajectories(root / "traj", episodes=2, steps=max(frames, 2) + 2, width=640, height=480)
        out = {}
        for name in ("live", "cached"):
            cache_dir = None
            if name == "cached":
                t0 = time.perf_counter()
                build_cache(BuildConfig(data=root / "traj", cache_dir=root / "cache", model="tiny",
                                        image_width=width, device=device))  # fmt: skip
                out["cache_build_s"] = time.perf_counter() - t0
                cache_dir = str(root / "cache")
            config = VlnTrainConfig(
                data=str(root / "traj"), model=str(qwen), vggt="tiny", output_dir=str(root / name),
                max_steps=steps + 1, device=device, image_width=width, merger_hidden=256, grad_accum=2,
                num_workers=workers, save_steps=0, warmup_ratio=0.0, cache_dir=cache_dir,
            )  # fmt: skip
            t0 = time.perf_counter()
            train_vln(config)
            out[name] = _breakdown(root / name, time.perf_counter() - t0)
    out["speedup_s_per_it"] = out["live"]["median_s"]["step_time"] / out["cached"]["median_s"]["step_time"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--width", type=int, default=644)
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    result = {
        "config": vars(args),
        "models": "tiny Qwen2.5-VL (hidden 32, 2 layers) + tiny VGGT (width 64, 24 layers)",
        **run(args.steps, args.width, args.frames, args.device, args.workers),
        "peak_rss_mb": peak_rss_mb(),
    }
    path = write_result("train_vln", result, args.out)
    print(json.dumps(result, indent=2))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
