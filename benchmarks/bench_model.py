"""VGGT model benchmark: load time/memory and forward time/peak memory, one fresh process per row.

The weights are a 1B-shaped safetensors file with random values (the tiny recipe applied to the
1B shapes), written once to ``$VGGTCTL_BENCH_WEIGHTS`` or ``$VGGTCTL_HOME/bench/`` (never in git).

    python benchmarks/bench_model.py                   # full CPU table (slow: ~20 min on 2 cores)
    python benchmarks/bench_model.py --quick           # smoke run: tiny preset, 224², fp32 + bf16
    python benchmarks/bench_model.py --rows 1x518x518 1x224x224 --profile
    python benchmarks/bench_model.py --device cuda --dtype bf16
    python benchmarks/bench_model.py --rows 1x224x224 --no-load --side-by-side   # fp32 | bf16 | bf16 autocast

Every run ends with a side-by-side table of the rows measured in more than one precision: fp32, bf16
weights (the loader's low-memory bf16 path) and fp32 weights under bf16 autocast (what ``infer --dtype bf16``
and ``--dtype auto`` on a native-bf16 CPU run), with the speed-up, peak RSS, parity against fp32 and what
``--dtype auto`` picks on this machine (``vggtctl.runtime``: CPU flags, and the GEMM probe's measurement).

Each row runs in its own subprocess, so ``peak_rss_mb`` is that row's own peak. Results go to
``benchmarks/results/model.json`` (``benchmarks/common.write_result``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import machine, peak_rss_mb, write_result  # noqa: E402

# Reference implementation, 2-core CPU, torch 2.13, fp32, no_grad, camera+depth+point (ARCHITECTURE.md §8).
REFERENCE_CPU = {
    "1x518x518": {"first_s": 18.97, "warm_s": 15.94, "peak_rss_mb": 5798},
    "2x518x518": {"first_s": 34.02, "warm_s": 31.73, "peak_rss_mb": 6089},
    "1x392x518": {"first_s": 13.48, "warm_s": 11.32, "peak_rss_mb": 5665},
    "2x392x518": {"first_s": 25.49, "warm_s": 23.03, "peak_rss_mb": 5915},
    "1x224x224": {"first_s": 3.78, "warm_s": 2.75, "peak_rss_mb": 5259},
    "2x224x224": {"first_s": 5.73, "warm_s": 4.81, "peak_rss_mb": 5369},
}
REFERENCE_WEIGHTS_RSS_MB = 5036
# The reference implementation run on the 2-vCPU AMD EPYC (Zen 3, AVX2) dev VM, interleaved with
# vggtctl runs on 2026-11-28 (docs/performance.md): medians of the warm forwards. Only compared
# when this machine looks like that one (same CPU model name and CPU count).
REFERENCE_SAME_CPU = {
    "cpu_model": "AMD EPYC",
    "cpus": 2,
    "rows": {
        "1x518x518": {"warm_s": 45.37, "peak_rss_forward_mb": 5596},
        "2x518x518": {"warm_s": 92.65, "peak_rss_forward_mb": 5824},
        "1x224x224": {"warm_s": 8.87, "peak_rss_forward_mb": 5006},
    },
}
FULL_ROWS = [
    "1x518x518", "2x518x518", "1x392x518", "2x392x518", "1x224x224", "2x224x224",
    "4x224x224", "8x224x224", "4x518x518", "8x518x518",
]  # fmt: skip
BF16_ROWS = ["1x224x224", "1x518x518"]
# On a GPU also show how time and memory grow with the number of frames (one aggregator pass).
GPU_EXTRA_ROWS = ["16x518x518", "32x518x518", "64x518x518", "100x518x518"]
PARITY_KEYS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf")


def weights_file(preset: str) -> Path:
    """Where the random benchmark weights for ``preset`` live."""
    env = os.environ.get("VGGTCTL_BENCH_WEIGHTS")
    if env and preset == "vggt-1b":
        return Path(env)
    from vggtctl.paths import vggtctl_home

    return vggtctl_home() / "bench" / f"{preset}-random.safetensors"


def make_random_weights(path: Path, preset: str) -> Path:
    """Stream a safetensors file with every key of ``preset`` drawn by the tiny recipe (no 5 GB in RAM)."""
    from vggtctl.models.vggt.build import expected_shapes
    from vggtctl.models.vggt.config import get_config
    from vggtctl.models.vggt.tiny import draw
    from vggtctl.utils.atomic import atomic_open

    entries = expected_shapes(get_config(preset))
    header: dict[str, Any] = {
        "__metadata__": {"format": "pt", "vggtctl": f"random {preset}-shaped benchmark weights"}
    }
    offset = 0
    for key, shape in entries:
        size = math.prod(shape) * 4
        header[key] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with atomic_open(path) as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for key, shape in entries:
            f.write(draw(key, shape).tobytes())
    return path


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _stage_timer(model: Any, sync: Any) -> dict[str, float]:
    """Accumulate wall time per stage through forward pre/post hooks."""
    totals: dict[str, float] = {}
    starts: dict[str, float] = {}
    stages = {
        "patch_embed": [model.aggregator.patch_embed],
        "frame_blocks": list(model.aggregator.frame_blocks),
        "global_blocks": list(model.aggregator.global_blocks),
        "camera_head": [model.camera_head],
        "depth_head": [model.depth_head],
        "point_head": [model.point_head],
    }
    for name, modules in stages.items():
        for m in modules:
            if m is None:
                continue

            def pre(*_: Any, n: str = name) -> None:
                sync()
                starts[n] = time.perf_counter()

            def post(*_: Any, n: str = name) -> None:
                sync()
                totals[n] = totals.get(n, 0.0) + time.perf_counter() - starts[n]

            m.register_forward_pre_hook(pre)
            m.register_forward_hook(post)
    return totals


def use_reference_like_costs() -> None:
    """Re-enable the reference's known costs in this process (same-machine A/B baseline).

    MKL GEMMs with a separate GELU, NCHW DPT convolutions with 1×1 projections as convs, the UV
    pos-embed built as a full float64 grid per call, and all 24 aggregator layers kept alive.
    It is this implementation configured like the reference, not the reference code.
    """
    import torch

    from vggtctl.models.vggt import dpt_head, layers, model

    layers.set_onednn_linear(False)
    dpt_head.set_channels_last(False)

    def conv_projection(x: Any, conv: Any, h: int, w: int) -> Any:
        n, _, c = x.shape
        return conv(x.permute(0, 2, 1).reshape(n, c, h, w))

    def full_grid_pos_embed(x: Any, image_w: int, image_h: int) -> Any:
        _, c, h, w = x.shape
        aspect = image_w / image_h
        diag = (aspect**2 + 1.0) ** 0.5
        sx, sy = aspect / diag, 1.0 / diag
        xs = torch.linspace(-sx * (w - 1) / w, sx * (w - 1) / w, w)
        ys = torch.linspace(-sy * (h - 1) / h, sy * (h - 1) / h, h)
        uu, vv = torch.meshgrid(xs, ys, indexing="xy")

        def sincos(dim: int, pos: Any) -> Any:
            omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
            out = pos.reshape(-1).double()[:, None] * (1.0 / 100.0**omega)[None]
            return torch.cat([out.sin(), out.cos()], dim=1).float()

        emb = torch.cat([sincos(c // 2, uu), sincos(c // 2, vv)], dim=-1).view(h, w, c)
        return x + (emb * 0.1).permute(2, 0, 1)[None]

    dpt_head.conv1x1_tokens = conv_projection
    dpt_head.add_pos_embed = full_grid_pos_embed
    model.VGGT.required_layers = lambda self, with_track=False: tuple(range(self.config.depth))


def run_row(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this (fresh) process."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    from vggtctl.models.vggt.build import from_state_dict
    from vggtctl.models.vggt.config import get_config

    if spec.get("baseline"):
        use_reference_like_costs()
    from vggtctl.runtime.precision import autocast

    device = torch.device(spec["device"])
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[spec["dtype"]]
    # autocast rows keep float32 weights and lower the matmuls, as `vggtctl infer` does.
    weight_dtype = torch.float32 if spec.get("autocast") else dtype
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    out: dict[str, Any] = {**spec, "rss_start_mb": round(_rss_mb(), 1)}
    path = Path(spec["weights"])
    t0 = time.perf_counter()
    sd = load_file(str(path))
    config = get_config(spec["preset"], enable_track=False)
    model = from_state_dict(config, sd, device=device, dtype=weight_dtype)
    del sd
    sync()
    out["load_s"] = round(time.perf_counter() - t0, 3)
    out["load_peak_rss_mb"] = round(peak_rss_mb(), 1)
    out["weights_file_mb"] = round(path.stat().st_size / 2**20, 1)
    if spec["kind"] == "load":
        # Page every weight in (what a forward does) and see that nothing was copied.
        with torch.inference_mode():
            checksum = sum(float(p.float().sum()) for p in model.parameters())
        out["checksum_finite"] = math.isfinite(checksum)
        out["weights_resident_rss_mb"] = round(_rss_mb(), 1)
        out["peak_rss_mb"] = round(peak_rss_mb(), 1)
        out["peak_over_weights"] = round(out["peak_rss_mb"] / out["weights_file_mb"], 3)
        return out
    s, h, w = spec["frames"], spec["height"], spec["width"]
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(1, s, 3, h, w, generator=gen).to(device)
    stages = _stage_timer(model, sync) if spec.get("profile") else None
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times, cpu_times = [], []
    with torch.inference_mode(), autocast(spec["device"], dtype if spec.get("autocast") else None):
        for _ in range(1 + spec["repeat"]):
            if stages is not None:
                stages.clear()
            sync()
            t, c = time.perf_counter(), time.process_time()
            preds = model(images)
            sync()
            times.append(time.perf_counter() - t)
            cpu_times.append(time.process_time() - c)
    out["first_s"] = round(times[0], 3)
    out["warm_s"] = round(min(times[1:]), 3) if len(times) > 1 else None
    # CPU seconds of all threads: less sensitive than wall time to other processes on a shared machine.
    out["warm_cpu_s"] = round(min(cpu_times[1:]), 3) if len(cpu_times) > 1 else None
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    if cuda:
        out["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["gpu"] = torch.cuda.get_device_name(0)
    if stages is not None:
        out["stages_s"] = {k: round(v, 3) for k, v in stages.items()}
    finite = all(bool(torch.isfinite(preds[k]).all()) for k in PARITY_KEYS if k in preds)
    out["outputs_finite"] = finite
    if spec.get("save"):
        np.savez(spec["save"], **{k: preds[k].float().cpu().numpy() for k in PARITY_KEYS if k in preds})
    return out


def _spec_rows(args: argparse.Namespace, weights: Path, tmp: Path) -> list[dict[str, Any]]:
    base = {"device": args.device, "preset": args.preset, "weights": str(weights), "repeat": args.repeat}
    rows: list[dict[str, Any]] = []
    if not args.no_load:
        rows.append({**base, "kind": "load", "dtype": "fp32", "name": "load"})
    shapes = args.rows or (
        ["1x224x224", "2x224x224"]
        if args.quick
        else FULL_ROWS + (GPU_EXTRA_ROWS if args.device != "cpu" else [])
    )
    dtypes = [args.dtype] if args.dtype else (["fp32"] if args.device == "cpu" else ["bf16"])
    for dt in dtypes:
        for name in shapes:
            s, h, w = (int(v) for v in name.split("x"))
            row = {**base, "kind": "forward", "dtype": dt, "name": name, "frames": s, "height": h, "width": w,
                   "profile": args.profile}  # fmt: skip
            if args.baseline and dt == "fp32" and args.device == "cpu":
                twin = {**row, "baseline": True}
                rows.extend([twin, row] if args.baseline_first else [row, twin])
            else:
                rows.append(row)
    low = args.dtype if args.dtype in ("bf16", "fp16") else "bf16"
    if not args.no_bf16 and args.dtype != "fp32":
        # Low precision: time + parity vs the fp32 run of the same input (bf16 weights, fp32 heads), and
        # with --side-by-side the autocast path too (fp32 weights, bf16 matmuls), timed like fp32.
        names = shapes if args.side_by_side else (["1x224x224"] if args.quick else BF16_ROWS)
        variants = [("fp32", False), (low, False)] + ([(low, True)] if args.side_by_side else [])
        for name in names:
            if name not in shapes:
                continue
            s, h, w = (int(v) for v in name.split("x"))
            for dt, cast in variants:
                tag = "fp32" if dt == "fp32" else ("autocast" if cast else "low")
                rows.append({**base, "kind": "forward", "dtype": dt, "name": name, "frames": s, "height": h,
                             "width": w, "repeat": args.repeat if args.side_by_side or dt != "fp32" else 0,
                             "save": str(tmp / f"{name}-{tag}.npz"), "parity": True,
                             "autocast": cast})  # fmt: skip
    return rows


def _parity(tmp: Path, name: str, tag: str = "low") -> dict[str, float] | None:
    import numpy as np

    a, b = tmp / f"{name}-fp32.npz", tmp / f"{name}-{tag}.npz"
    if not (a.is_file() and b.is_file()):
        return None
    with np.load(a) as fa, np.load(b) as fb:
        return {
            k: float(np.abs(fb[k].astype(np.float64) - fa[k]).max() / max(np.abs(fa[k]).max(), 1e-12))
            for k in fa.files
            if k in fb.files
        }


def _auto_choice(device: str) -> dict[str, Any]:
    """What ``--dtype auto`` picks here, from the CPU flags, and the GEMM probe's measurement beside it."""
    from vggtctl.runtime.precision import cpu_bf16_support, probe_cpu_bf16, resolve_dtype

    support = cpu_bf16_support()
    out: dict[str, Any] = {"cpu_bf16": support.to_dict(), "gemm_probe": probe_cpu_bf16()}
    try:
        choice = resolve_dtype("auto", "cuda" if device.startswith("cuda") else "cpu", cpu=support)
        out["auto_dtype"] = choice.short
        out["auto_reason"] = choice.reason
    except Exception as e:  # noqa: BLE001 - a benchmark reports, it does not stop
        out["auto_dtype"] = f"unknown ({e})"
    return out


def side_by_side(results: list[dict[str, Any]], parity: dict[str, dict[str, dict[str, float]]]) -> list[dict]:
    """One entry per shape measured in several precisions: warm time, speed-up vs fp32, peak RSS, parity."""
    table = []
    for name in dict.fromkeys(r["name"] for r in results if r.get("parity") and r.get("warm_s")):
        runs = {
            ("autocast" if r.get("autocast") else r["dtype"]): r
            for r in results
            if r.get("parity") and r.get("name") == name and r.get("warm_s")
        }
        base = runs.get("fp32")
        if base is None or len(runs) < 2:
            continue
        entry: dict[str, Any] = {
            "name": name,
            "fp32_warm_s": base["warm_s"],
            "fp32_warm_cpu_s": base.get("warm_cpu_s"),
            "fp32_peak_rss_mb": base["peak_rss_mb"],
        }
        for key, r in runs.items():
            if key == "fp32":
                continue
            label = "bf16_autocast" if key == "autocast" else f"{key}_weights"
            entry[f"{label}_warm_s"] = r["warm_s"]
            entry[f"{label}_speedup"] = round(base["warm_s"] / r["warm_s"], 3)
            entry[f"{label}_peak_rss_mb"] = r["peak_rss_mb"]
            if r.get("warm_cpu_s") and base.get("warm_cpu_s"):
                # CPU seconds of all threads: the fairer ratio when other processes share the machine.
                entry[f"{label}_warm_cpu_s"] = r["warm_cpu_s"]
                entry[f"{label}_cpu_speedup"] = round(base["warm_cpu_s"] / r["warm_cpu_s"], 3)
            tag = "autocast" if key == "autocast" else "low"
            if name in parity.get(tag, {}):
                entry[f"{label}_parity_max_rel"] = round(max(parity[tag][name].values()), 6)
        table.append(entry)
    return table


def _print_side_by_side(table: list[dict[str, Any]], auto: dict[str, Any]) -> None:
    for e in table:
        parts = [f"fp32 {e['fp32_warm_s']:.3f} s ({e['fp32_peak_rss_mb']:.0f} MB)"]
        for label in ("bf16_weights", "fp16_weights", "bf16_autocast"):
            if f"{label}_warm_s" in e:
                par = e.get(f"{label}_parity_max_rel")
                cpu = e.get(f"{label}_cpu_speedup")
                parts.append(
                    f"{label} {e[f'{label}_warm_s']:.3f} s = {e[f'{label}_speedup']:.2f}x "
                    f"{f'(cpu time {cpu:.2f}x) ' if cpu else ''}"
                    f"({e[f'{label}_peak_rss_mb']:.0f} MB{f', parity {par:.1e}' if par is not None else ''})"
                )
        print(f"side by side {e['name']}: " + " | ".join(parts), file=sys.stderr)
    probe = auto["gemm_probe"]
    print(
        f"--dtype auto here: {auto.get('auto_dtype')} ({auto.get('auto_reason')}); "
        f"GEMM probe: bf16 {probe['speedup']:.2f}x fp32",
        file=sys.stderr,
    )


def _same_cpu_as_reference() -> bool:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    names = {ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")}
    return names == {REFERENCE_SAME_CPU["cpu_model"]} and os.cpu_count() == REFERENCE_SAME_CPU["cpus"]


def _compare_to_baseline(results: list[dict[str, Any]]) -> None:
    """Attach this-code / reference-like ratios to rows that have a reference-like twin."""
    for twin in (r for r in results if r.get("baseline") and r.get("warm_s")):
        mine = next(
            (r for r in results if r.get("name") == twin["name"] and not r.get("baseline") and not r.get("parity")
             and r.get("dtype") == "fp32" and r.get("warm_s")),
            None,
        )  # fmt: skip
        if mine is None:
            continue
        mine["warm_vs_reference_like"] = round(mine["warm_s"] / twin["warm_s"], 3)
        if mine.get("warm_cpu_s") and twin.get("warm_cpu_s"):
            mine["warm_cpu_vs_reference_like"] = round(mine["warm_cpu_s"] / twin["warm_cpu_s"], 3)
        mine["peak_rss_vs_reference_like"] = round(mine["peak_rss_mb"] / twin["peak_rss_mb"], 3)
        print(
            f"{twin['name']}: this code / reference-like = wall {mine['warm_vs_reference_like']}, "
            f"cpu {mine.get('warm_cpu_vs_reference_like')}, peak RSS {mine['peak_rss_vs_reference_like']}",
            file=sys.stderr,
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny preset, 224², fp32 (+bf16 on CPU)")
    ap.add_argument("--preset", default=None, help="vggt-1b (default) or tiny (default with --quick)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument(
        "--dtype", choices=["fp32", "bf16", "fp16"], default=None, help="default fp32 (cpu), bf16 (cuda)"
    )
    ap.add_argument("--rows", nargs="*", help="SxHxW rows, e.g. 1x518x518 2x224x224")
    ap.add_argument("--repeat", type=int, default=1, help="warm forwards after the first (min is reported)")
    ap.add_argument("--profile", action="store_true", help="per-stage times (patch embed, blocks, heads)")
    ap.add_argument("--no-load", action="store_true", help="skip the load-only row")
    ap.add_argument("--no-bf16", action="store_true", help="skip the CPU bf16 parity rows")
    ap.add_argument(
        "--side-by-side",
        action="store_true",
        help="every row in fp32, bf16 weights and bf16 autocast, all warm-timed (with --rows: only those)",
    )
    ap.add_argument("--baseline", action="store_true", help="also run each fp32 CPU row reference-like (A/B)")
    ap.add_argument(
        "--baseline-first", action="store_true", help="run the reference-like twin before each row"
    )
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per row")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_row(json.loads(args.child))), flush=True)
        return 0
    args.preset = args.preset or ("tiny" if args.quick else "vggt-1b")
    weights = weights_file(args.preset)
    if not weights.is_file():
        print(f"writing random {args.preset} weights to {weights} (once)", file=sys.stderr, flush=True)
        t = time.perf_counter()
        make_random_weights(weights, args.preset)
        print(f"  done in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for spec in _spec_rows(args, weights, tmp):
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
            label = (
                f"{spec['name']} {spec['dtype']} {spec['device']}"
                + (" reference-like" if spec.get("baseline") else "")
                + (" autocast" if spec.get("autocast") else "")
            )
            print(f"== {label}", file=sys.stderr, flush=True)
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=False)
            except subprocess.TimeoutExpired:
                results.append({**spec, "error": f"timeout after {args.timeout} s"})
                continue
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode or not lines:
                results.append({**spec, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]})
                print(f"   failed: {results[-1]['error']}", file=sys.stderr, flush=True)
                continue
            row = json.loads(lines[-1])
            ref = (
                REFERENCE_CPU.get(spec["name"])
                if spec["device"] == "cpu" and spec["dtype"] == "fp32"
                else None
            )
            if ref and row.get("warm_s") and spec["preset"] == "vggt-1b" and not spec.get("baseline"):
                row["reference"] = ref
                row["warm_vs_reference"] = round(row["warm_s"] / ref["warm_s"], 3)
                row["peak_rss_vs_reference"] = round(row["peak_rss_mb"] / ref["peak_rss_mb"], 3)
                same = REFERENCE_SAME_CPU["rows"].get(spec["name"])
                if same and _same_cpu_as_reference():
                    row["reference_same_cpu"] = same
                    row["warm_vs_reference_same_cpu"] = round(row["warm_s"] / same["warm_s"], 3)
            results.append(row)
            keys = ("load_s", "first_s", "warm_s", "warm_cpu_s", "peak_rss_mb", "gpu_peak_mb", "warm_vs_reference",
                    "warm_vs_reference_same_cpu", "peak_over_weights")  # fmt: skip
            print(
                "   " + ", ".join(f"{k}={row[k]}" for k in keys if row.get(k) is not None),
                file=sys.stderr,
                flush=True,
            )
            if row.get("stages_s"):
                print(f"   stages: {row['stages_s']}", file=sys.stderr, flush=True)
        names = list(dict.fromkeys(r["name"] for r in results if r.get("parity")))
        parity = {n: p for n in names if (p := _parity(tmp, n))}
        parity_autocast = {n: p for n in names if (p := _parity(tmp, n, "autocast"))}
    _compare_to_baseline(results)
    auto = _auto_choice(args.device)
    table = side_by_side(results, {"low": parity, "autocast": parity_autocast})
    _print_side_by_side(table, auto)
    for name, errs in parity.items():
        print(
            f"low precision vs fp32 {name}: " + ", ".join(f"{k} {v:.2e}" for k, v in errs.items()),
            file=sys.stderr,
        )
    path = write_result(
        "model",
        {
            "args": {k: v for k, v in vars(args).items() if k != "child"},
            "weights": str(weights),
            "rows": results,
            "low_precision_parity_rel_err": parity,
            "autocast_parity_rel_err": parity_autocast,
            "side_by_side": table,
            "dtype_auto": auto,
            "reference_cpu": REFERENCE_CPU,
            "reference_weights_rss_mb": REFERENCE_WEIGHTS_RSS_MB,
            "parent": machine(),
        },
    )
    print(f"wrote {path}", file=sys.stderr)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
