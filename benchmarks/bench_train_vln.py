"""train-vln step time broken down: data wait, VGGT, Qwen forward+backward, optimizer (tiny or real-size models).

Runs the real training loop (``train_vln``, in-process) on a generated trajectory set and reads the
breakdown from the run's ``metrics.jsonl`` (the first step, which pays one-off costs, is left out).
Frames are 640x480 and preprocessed to width ``--width`` (644 = JanusVLN: 490x644, 35x46 VGGT patches,
391 LLM tokens per image).

``--size tiny`` (default): the tiny Qwen2.5-VL (``train-vln init-tiny``) and the seeded tiny VGGT, 2 samples
per step. ``--size 3b|7b``: Qwen2.5-VL-3B/7B-Instruct's real architecture with random weights
(``write_published_qwen``, bf16 like the Hub files) and a full-size VGGT-1B drawn on the device
(``seeded:vggt-1b``), JanusVLN's per-GPU share of one step: batch 1 x accumulation 8, width 644, 9 frames,
merger hidden 4096, bf16 on cuda, ZeRO-2 in one process with ``--deepspeed``; peak GPU memory is recorded.
Step time does not depend on weight values, so these time like the real models. On CPU they are refused
unless ``--allow-cpu``.

The "cached" half builds the VGGT feature cache for the same data (``vggtctl cache build``'s service,
bf16 storage) and runs the same steps with ``cache_dir`` set: its ``vggt_time`` is what the cache leaves
of VGGT (real sizes run only the live half unless ``--halves live,cached``).

    python benchmarks/bench_train_vln.py [--size tiny|3b|7b] [--steps 4] [--width 644] [--frames 9]
        [--device cpu] [--deepspeed] [--halves live,cached]
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


def _gpu_peak_reset(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _gpu_peak(device: str) -> dict:
    import torch

    if not device.startswith("cuda"):
        return {}
    mb = 2**20
    return {"gpu_peak_mb": round(torch.cuda.max_memory_allocated() / mb),
            "gpu_peak_reserved_mb": round(torch.cuda.max_memory_reserved() / mb)}  # fmt: skip


def cpu_refusal(size: str, device: str) -> str | None:
    """Why ``--size`` cannot run on ``device`` without ``--allow-cpu`` (None: it can)."""
    from vggtctl.services.vln.qwen_sizes import PUBLISHED_PARAMETERS

    if size == "tiny" or not device.startswith("cpu"):
        return None
    gb = (
        (PUBLISHED_PARAMETERS[size] + 1_256_000_000) * 8 / 1e9
    )  # + VGGT-1B; bf16 weights, grads, 2 AdamW moments
    return (f"--size {size} on cpu needs ~{gb:.0f} GB for weights, gradients and optimizer state plus activations "
            "and hours per step; run it with --device cuda, or pass --allow-cpu")  # fmt: skip


def run(steps: int, width: int, frames: int, device: str, workers: int, size: str = "tiny",
        deepspeed: bool = False, halves: tuple[str, ...] = ("live", "cached")) -> dict:  # fmt: skip
    from vggtctl.services.vln.config import VlnTrainConfig
    from vggtctl.services.vln.synthetic import write_trajectories
    from vggtctl.services.vln.tiny_qwen import write_published_qwen, write_tiny_qwen
    from vggtctl.services.vln.train import train_vln
    from vggtctl.services.vlncache.build import BuildConfig, build_cache

    real = size != "tiny"
    vggt = "seeded:vggt-1b" if real else "tiny"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        out: dict = {}
        t0 = time.perf_counter()
        if real:
            written = write_published_qwen(root / "qwen", size, device=device, dtype="bf16")
        else:
            written = write_tiny_qwen(root / "qwen")
        out["qwen"] = {"parameters": written.parameters, "write_s": time.perf_counter() - t0}
        # Episodes long enough that most samples carry `frames` images (the history rule caps at 9).
        write_trajectories(root / "traj", episodes=2, steps=max(frames, 2) + 2, width=640, height=480)
        for name in halves:
            cache_dir = None
            _gpu_peak_reset(device)
            if name == "cached":
                t0 = time.perf_counter()
                build_cache(BuildConfig(data=root / "traj", cache_dir=root / "cache", model=vggt,
                                        image_width=width, device=device))  # fmt: skip
                out["cache_build_s"] = time.perf_counter() - t0
                cache_dir = str(root / "cache")
                _gpu_peak_reset(device)
            config = VlnTrainConfig(
                data=str(root / "traj"), model=str(written.path), vggt=vggt, output_dir=str(root / name),
                max_steps=steps + 1, device=device, image_width=width, merger_hidden=4096 if real else 256,
                grad_accum=8 if real else 2, num_workers=workers, save_steps=0, warmup_ratio=0.0,
                cache_dir=cache_dir, deepspeed="zero2" if deepspeed else None, final_save=not real,
            )  # fmt: skip
            t0 = time.perf_counter()
            train_vln(config)
            out[name] = {**_breakdown(root / name, time.perf_counter() - t0), **_gpu_peak(device)}
    if "live" in out and "cached" in out:
        out["speedup_s_per_it"] = (
            out["live"]["median_s"]["step_time"] / out["cached"]["median_s"]["step_time"]
        )
    return out


MODELS = {
    "tiny": "tiny Qwen2.5-VL (hidden 32, 2 layers) + tiny VGGT (width 64, 24 layers)",
    "3b": "Qwen2.5-VL-3B-Instruct architecture, random bf16 weights + VGGT-1B architecture, seeded",
    "7b": "Qwen2.5-VL-7B-Instruct architecture, random bf16 weights + VGGT-1B architecture, seeded",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=tuple(MODELS), default="tiny")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--width", type=int, default=644)
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--deepspeed", action="store_true", help="DeepSpeed ZeRO-2, one process")
    ap.add_argument("--halves", default=None, help="live,cached (default: both for tiny, live for 3b/7b)")
    ap.add_argument("--allow-cpu", action="store_true", help="run --size 3b/7b on cpu anyway")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    refusal = None if args.allow_cpu else cpu_refusal(args.size, args.device)
    if refusal:
        sys.exit(f"bench_train_vln: {refusal}")
    halves = tuple((args.halves or ("live,cached" if args.size == "tiny" else "live")).split(","))
    if not set(halves) <= {"live", "cached"}:
        ap.error(f"--halves takes live and/or cached, not {args.halves!r}")
    result = {
        "config": vars(args),
        "models": MODELS[args.size],
        **run(
            args.steps, args.width, args.frames, args.device, args.workers, args.size, args.deepspeed, halves
        ),
        "peak_rss_mb": peak_rss_mb(),
    }
    if args.size != "tiny":
        result["compare"] = ("JanusVLN/NewJanusVLN: ~55 s/it on 8 GPUs (8 x batch 1 x accumulation 8 = 64 samples, "
                             "ZeRO-3, H800); one step here is one GPU's share of that it, without the 8-GPU traffic")  # fmt: skip
    name = "train_vln" if args.size == "tiny" else f"train_vln_{args.size}"
    path = write_result(name, result, args.out)
    print(json.dumps(result, indent=2))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
