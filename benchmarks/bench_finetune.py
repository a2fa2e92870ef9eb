"""Fine-tuning step time and peak memory: per strategy on the tiny model (CPU), 2 processes vs 1, and the
1B architecture (seeded random weights, LoRA per strategy, 2 frames 224², steps with and without gradient
checkpointing in one process per strategy, ``--arch-1b``). ``--device cuda`` runs those 1B steps on the GPU
(``benchmarks/gpu_check.sh``: ``--only-1b --arch-1b --device cuda --frames-1b 4 --size-1b 518``): the model is built
seeded on the device, steps run under bf16 autocast (``--dtype-1b``), timings are synchronized and each mode's
peak is its own ``torch.cuda.max_memory_allocated`` (reset before each step).

Tiny runs go through the real command (``python -m vggtctl finetune``, a fresh process each: clean peak RSS)
on generated synthetic scenes; step times are the median ``step_time`` of ``metrics.jsonl`` after the first
step. The 1B runs build the model in-process (about 5 GB fp32 + gradients): run them under the heavy lock.

    python benchmarks/bench_finetune.py [--steps 4] [--image-size 112]
    flock /work/locks/heavy.lock python benchmarks/bench_finetune.py --arch-1b --only-1b
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import write_result  # noqa: E402


def _tiny_run(data: Path, out: Path, strategy: str, steps: int, size: int, nproc: int, threads: int) -> dict:
    cmd = [sys.executable, "-m", "vggtctl", "finetune", "--config", "tiny-smoke", "--data", str(data),
           "--output-dir", str(out), "--strategy", strategy, "--max-steps", str(steps), "--device", "cpu",
           f"data.image_size={size}", "run.val_every=0", "run.checkpoint_every=0", "--json"]  # fmt: skip
    cmd += ["optimizer.batch_size=1"] + (["--nproc-per-node", str(nproc)] if nproc > 1 else [])
    # Threads per process fixed: on a shared 2-core machine torch's default (every core) spins against
    # other jobs and step times swing tenfold.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    times = [r["step_time"] for r in records[1:]] or [records[0]["step_time"]]
    meta = json.loads((out / "meta.json").read_text())
    return {
        "strategy": strategy,
        "processes": nproc,
        "image_size": size,
        "frames": 2,
        "median_step_s": statistics.median(times),
        "wall_s": wall,
        "peak_rss_mb_max_child": max(peak, before) / 1024.0,
        "trainable_parameters": meta["finetune"]["trainable_parameters"],
        "samples_per_step": records[-1]["batch_size"],
        "threads_per_process": threads,
    }


def _arch_1b(
    strategy: str,
    size: int,
    modes: str = "1010",
    device: str = "cpu",
    frames: int = 2,
    dtype: str = "fp32",
    preset: str = "vggt-1b",
) -> dict:
    """One process, one strategy: steps with (``1``) and without (``0``) gradient checkpointing in turn.

    Time ratios come from one process (the shared machine's load hits both modes alike): each mode's
    fastest step. Peak RSS only grows, so the first mode's peak is read before the other mode runs: run
    the lighter mode (checkpointing on) first.
    """
    import torch

    from vggtctl.models.vggt.config import get_config
    from vggtctl.models.vggt.model import VGGT
    from vggtctl.services.finetune.config import LoraSettings, LossSettings
    from vggtctl.services.finetune.losses import objective
    from vggtctl.services.finetune.targets import apply_lora, parameter_counts

    cuda = device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    torch.manual_seed(0)  # seeded real init (no weights are downloaded)
    t_init = time.perf_counter()
    with torch.device(device):  # built on the device: no host copy of the 1B weights
        model = VGGT(get_config(preset, enable_track=False, enable_point=False))
        peft = apply_lora(model, strategy, LoraSettings()).to(device)  # .to: any buffer made on the host
    sync()
    init_s = time.perf_counter() - t_init
    after_init = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    peft.train()
    counts = parameter_counts(peft)
    s = frames
    batch = {
        "images": torch.rand(1, s, 3, size, size),
        "depth": torch.rand(1, s, size, size) + 1.0,
        "valid": torch.ones(1, s, size, size, dtype=torch.bool),
        "intrinsics": torch.tensor([[size, 0, size / 2], [0, size, size / 2], [0, 0, 1.0]])
        .expand(1, s, 3, 3)
        .clone(),
        "extrinsics": torch.eye(4)[:3].expand(1, s, 3, 4).clone(),
    }
    batch["extrinsics"][:, 1:, 0, 3] = 0.3
    batch = {k: v.to(device) for k, v in batch.items()}
    autocast = (
        torch.autocast(device.split(":")[0], dtype=torch.bfloat16 if dtype == "bf16" else torch.float16)
        if dtype in ("bf16", "fp16")
        else contextlib.nullcontext()
    )
    opt = torch.optim.AdamW([p for p in peft.parameters() if p.requires_grad], lr=1e-4)
    times: dict[str, list[float]] = {"1": [], "0": []}
    peaks: dict[str, float] = {}
    for mode in modes:
        model.aggregator.gradient_checkpointing = mode == "1"
        model.aggregator.patch_embed.gradient_checkpointing = mode == "1"
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        sync()
        t0 = time.perf_counter()
        with autocast:
            loss = objective(peft(batch["images"]), batch, LossSettings())["loss_objective"]
        loss.backward()
        opt.step()
        opt.zero_grad()
        sync()
        times[mode].append(time.perf_counter() - t0)
        if cuda:  # reset before each step: this mode's own peak (the largest of its steps)
            peak = torch.cuda.max_memory_allocated() / 2**20
            peaks[mode] = max(peaks.get(mode, 0.0), peak)
        else:
            peaks.setdefault(mode, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    rows = []
    for mode in dict.fromkeys(modes):
        rows.append(
            {
                "strategy": strategy,
                "image_size": size,
                "frames": s,
                "gradient_checkpointing": mode == "1",
                "step_s": min(times[mode]),
                "step_times_s": times[mode],
                # CPU: the peak of the first mode is its own; a later mode's includes the earlier ones
                **({"gpu_peak_mb": round(peaks[mode], 1)} if cuda else {"peak_rss_mb": peaks[mode]}),
                "device": device,
                "dtype": dtype,
                "init_s": init_s,
                "rss_after_init_mb": after_init,
                "threads": torch.get_num_threads(),
                **counts,
                **({"gpu": torch.cuda.get_device_name(0)} if cuda else {}),
            }
        )
    base = rows[0]["step_s"]
    for r in rows:
        r["step_time_vs_first_mode"] = r["step_s"] / base
    return {"strategy": strategy, "modes": modes, "rows": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each tiny-run process")
    ap.add_argument(
        "--arch-1b", action="store_true", help="also one step of the 1B architecture per strategy"
    )
    ap.add_argument("--only-1b", action="store_true")
    ap.add_argument("--strategy-1b", default="abc")
    ap.add_argument(
        "--modes-1b",
        default="1010",
        help="1B steps in order, 1 = with, 0 = without gradient checkpointing (default 1010: 2 of each)",
    )
    ap.add_argument("--device", default="cpu", help="device of the 1B steps (cuda: GPU rows)")
    ap.add_argument("--frames-1b", type=int, default=2)
    ap.add_argument("--size-1b", type=int, default=224)
    ap.add_argument(
        "--dtype-1b", choices=["fp32", "bf16", "fp16"], default=None, help="autocast (cuda: bf16)"
    )
    ap.add_argument("--out", default=None, help="results folder (default: $VGGTCTL_BENCH_OUT or results/)")
    ap.add_argument("--preset-1b", default="vggt-1b", help=argparse.SUPPRESS)  # tiny: a CPU smoke run
    ap.add_argument("--one-1b", help=argparse.SUPPRESS)  # internal: one 1B measurement in this process
    args = ap.parse_args()
    dtype_1b = args.dtype_1b or ("bf16" if args.device.startswith("cuda") else "fp32")
    if args.one_1b:
        row = _arch_1b(
            args.one_1b, args.size_1b, args.modes_1b, args.device, args.frames_1b, dtype_1b, args.preset_1b
        )
        print(json.dumps(row))
        return 0
    key_1b = "arch_1b_cpu" if args.device == "cpu" else f"arch_1b_{args.device.split(':')[0]}"
    result: dict = {"tiny_cpu": [], key_1b: []}
    if not args.only_1b:
        from vggtctl.services.synthetic import generate_scenes

        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "data"
            generate_scenes(data, scenes=2, views=4, seed=0)
            for strategy in "abc":
                result["tiny_cpu"].append(
                    _tiny_run(
                        data,
                        Path(tmp) / f"run_{strategy}",
                        strategy,
                        args.steps,
                        args.image_size,
                        1,
                        args.threads,
                    )
                )
            result["tiny_cpu"].append(
                _tiny_run(data, Path(tmp) / "run_a2", "a", args.steps, args.image_size, 2, args.threads)
            )
    if args.arch_1b:
        for strategy in args.strategy_1b:
            # a fresh process per strategy: its own peak RSS
            cmd = [sys.executable, __file__, "--one-1b", strategy, "--modes-1b", args.modes_1b,
                   "--device", args.device, "--frames-1b", str(args.frames_1b), "--size-1b", str(args.size_1b),
                   "--dtype-1b", dtype_1b, "--preset-1b", args.preset_1b]  # fmt: skip
            out = subprocess.run(
                cmd, check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
            )
            result[key_1b] += json.loads(out.stdout.strip().splitlines()[-1])["rows"]
    path = write_result("finetune" if args.device == "cpu" else f"finetune_{key_1b[8:]}", result, args.out)
    print(json.dumps(result, indent=2))
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
