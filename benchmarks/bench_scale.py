"""`vggtctl infer` at scale: frames vs peak memory and time, one pass vs overlapping chunks (+ the memory fit).

Each row runs in a fresh process (``--child``) so its peak RSS (VmHWM) is its own: load the model as
``vggtctl infer`` does (``load_model``, memory-mapped safetensors), draw seeded random images, run one
pass (``services.infer.predict``) or the chunked path (``services.infer_chunked.predict_chunked``) and
report load/forward seconds, RSS after the load, peak RSS (CPU) or ``max_memory_allocated`` (CUDA), and
the memory plan's estimate for the same row.

    python benchmarks/bench_scale.py                      # tiny: 4..96 frames, one pass and chunked
    flock /work/locks/heavy.lock python benchmarks/bench_scale.py --preset vggt-1b --rows 1x224x224 2x224x224
    python benchmarks/bench_scale.py --fit                # also refit vggtctl/services/memory_fit.json
    python benchmarks/bench_scale.py --device cuda --dtype bf16 --preset vggt-1b   # GPU rows (not measured yet)

1B rows use the random 1B-shaped weights of ``bench_model.py`` (written once, never committed).
Results: ``benchmarks/results/scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import write_result  # noqa: E402

TINY_ROWS = ["4x168x168", "16x168x168", "32x168x168", "64x168x168", "96x168x168", "8x336x336", "24x252x252"]
TINY_CHUNKED = ["96x168x168:16:4", "96x168x168:32:8"]
CPU_1B_ROWS = ["1x224x224", "2x224x224", "4x224x224", "8x224x224", "2x308x308"]
CPU_1B_CHUNKED = ["12x224x224:6:2"]
GPU_ROWS = ["100x518x518", "300x518x518", "600x518x518", "1000x518x518"]
GPU_CHUNKED = ["1000x518x518:200:20"]
OUTPUT_FLOATS = 12


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def run_row(spec: dict[str, Any]) -> dict[str, Any]:
    """One row in this fresh process."""
    import numpy as np
    import torch

    from vggtctl import load_model
    from vggtctl.services.infer import predict
    from vggtctl.services.infer_chunked import predict_chunked
    from vggtctl.services.infer_plan import estimate_peak_bytes, memory_features

    device, dtype = spec["device"], spec["dtype"]
    load_dtype = None if dtype == "fp32" or device.startswith("cuda") else dtype
    t0 = time.perf_counter()
    if spec["weights"] == "seeded":  # --seeded: built on the device (no weights file), fp32 like the loader's
        from vggtctl.models.vggt.config import get_config
        from vggtctl.models.vggt.model import VGGT

        torch.manual_seed(0)
        with torch.device(device):
            model = VGGT(get_config(spec["preset"])).eval().to(device)
        if load_dtype:
            model = model.to(getattr(torch, {"bf16": "bfloat16", "fp16": "float16"}[load_dtype]))
    else:
        model = load_model(spec["weights"], preset=spec["preset"], device=device, dtype=load_dtype)
    # Page every weight in: a forward touches all of them, and the load row should count them.
    with torch.inference_mode():
        sum(float(p.float().sum()) for p in model.parameters())
    out: dict[str, Any] = {**spec, "load_s": round(time.perf_counter() - t0, 3)}
    out["rss_after_load_mb"] = round(_status_kb("VmRSS") / 1024, 1)
    s, h, w = spec["frames"], spec["height"], spec["width"]
    images = np.random.default_rng(0).random((s, 3, h, w), dtype=np.float32)
    autocast_dtype = None if dtype == "fp32" else dtype
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def one(x: np.ndarray) -> dict[str, np.ndarray]:
        return predict(model, x, device=device, dtype=autocast_dtype)

    if cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    if spec.get("chunk_size"):
        preds, reports = predict_chunked(one, images, spec["chunk_size"], spec["overlap"])
        out["chunks"] = len(reports)
        out["max_residual_rel"] = max(r.residual_rel for r in reports)
        frames_run = sum(r.end - r.start for r in reports)
    else:
        preds = one(images)
        frames_run = s
    out["forward_s"] = round(time.perf_counter() - t, 3)
    out["s_per_frame"] = round(out["forward_s"] / s, 4)
    out["frames_computed"] = frames_run
    out["peak_rss_mb"] = round(_status_kb("VmHWM") / 1024, 1)
    if cuda:
        out["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["gpu"] = torch.cuda.get_device_name(0)
    cfg = model.config
    n = spec.get("chunk_size") or s
    ld = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[dtype] if load_dtype else "float32"
    out["features"] = memory_features(cfg, n, h, w, s)
    est = estimate_peak_bytes(cfg, spec["preset"], n, h, w, total_frames=s, device=device, load_dtype=ld)
    out["estimate_mb"] = round(est / 2**20, 1)
    measured = out.get("gpu_peak_mb") if cuda else out["peak_rss_mb"]
    out["estimate_error"] = round(out["estimate_mb"] / measured - 1, 4)
    out["outputs_finite"] = bool(np.isfinite(preds["depth"]).all())
    return out


def parse_row(text: str) -> dict[str, Any]:
    """``SxHxW`` or ``SxHxW:chunk:overlap``."""
    shape, *chunk = text.split(":")
    s, h, w = (int(v) for v in shape.split("x"))
    row: dict[str, Any] = {"name": text, "frames": s, "height": h, "width": w}
    if chunk:
        row["chunk_size"], row["overlap"] = int(chunk[0]), int(chunk[1])
    return row


def fit(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Least squares ``peak - weights = runtime + a·tokens + b·dpt + c·pixels`` per preset (CPU rows)."""
    import numpy as np
    from scipy.optimize import nnls

    out: dict[str, dict[str, float]] = {}
    for preset in sorted({r["preset"] for r in rows}):
        rs = [r for r in rows if r["preset"] == preset and "peak_rss_mb" in r]
        if len(rs) < 4:
            continue
        x = np.array(
            [[1.0, r["features"]["tokens"], r["features"]["dpt"], r["features"]["pixels"]] for r in rs]
        )
        # The per-pixel outputs every frame keeps on the host (depth, confidences, two point maps, the
        # image: 12 float32 per pixel) are counted, not fitted: one-pass rows alone cannot tell them from
        # the token term, and chunked runs of thousands of frames are dominated by them.
        y = np.array([r["peak_rss_mb"] * 2**20 - r["weights_bytes"] - OUTPUT_FLOATS * r["features"]["pixels"]
                      for r in rs])  # fmt: skip
        # Non-negative least squares: every term is memory that exists, so no coefficient may be negative
        # (plain least squares trades a negative token term against the collinear pixel term).
        coef, _ = nnls(x, y)
        out[preset] = {
            "runtime_bytes": float(coef[0]),
            "a_tokens": float(coef[1]),
            "b_dpt": float(coef[2]),
            "c_pixels": float(coef[3]) + OUTPUT_FLOATS,
            "rows": [r["name"] for r in rs],
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", help="tiny (default) or vggt-1b")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    ap.add_argument("--rows", nargs="*", help="SxHxW or SxHxW:chunk:overlap rows")
    ap.add_argument("--fit", action="store_true", help="refit memory_fit.json from these rows (CPU, fp32)")
    ap.add_argument("--merge", action="store_true", help="add to an existing results/scale.json")
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument(
        "--seeded",
        action="store_true",
        help="build seeded weights on the device (no weights file; GPU check)",
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_row(json.loads(args.child))), flush=True)
        return 0
    from bench_model import make_random_weights, weights_file

    from vggtctl.models.vggt.config import get_config
    from vggtctl.services.infer_plan import FIT_FILE, weight_bytes

    cuda = args.device.startswith("cuda")
    if args.rows:
        names = args.rows
    elif args.preset == "tiny":
        names = TINY_ROWS + TINY_CHUNKED
    else:
        names = (GPU_ROWS + GPU_CHUNKED) if cuda else (CPU_1B_ROWS + CPU_1B_CHUNKED)
    weights = "seeded" if args.seeded else weights_file(args.preset)
    if not args.seeded and not weights.is_file():
        print(f"writing random {args.preset} weights to {weights} (once)", file=sys.stderr, flush=True)
        make_random_weights(weights, args.preset)
    wbytes = weight_bytes(get_config(args.preset), "float32")
    results: list[dict[str, Any]] = []
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    for name in names:
        spec = {**parse_row(name), "preset": args.preset, "device": args.device, "dtype": args.dtype,
                "weights": str(weights)}  # fmt: skip
        print(f"== {args.preset} {name} {args.dtype} {args.device}", file=sys.stderr, flush=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=args.timeout, env=env, check=False
            )
        except subprocess.TimeoutExpired:
            results.append({**spec, "error": f"timeout after {args.timeout} s"})
            continue
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not lines:
            results.append({**spec, "error": (proc.stderr or proc.stdout).strip().splitlines()[-3:]})
            print(f"   failed: {results[-1]['error']}", file=sys.stderr, flush=True)
            continue
        row = {**json.loads(lines[-1]), "weights_bytes": wbytes}
        results.append(row)
        keys = ("forward_s", "s_per_frame", "rss_after_load_mb", "peak_rss_mb", "gpu_peak_mb", "estimate_mb",
                "estimate_error", "chunks", "max_residual_rel")  # fmt: skip
        print("   " + ", ".join(f"{k}={row[k]}" for k in keys if row.get(k) is not None), file=sys.stderr)
    path = Path(os.environ.get("VGGTCTL_BENCH_OUT") or Path(__file__).parent / "results") / "scale.json"
    if args.merge and path.is_file():
        old = json.loads(path.read_text()).get("rows", [])
        keep = {(r["preset"], r["name"], r["device"], r["dtype"]) for r in results}
        results = [r for r in old if (r["preset"], r["name"], r["device"], r["dtype"]) not in keep] + results
    if args.fit:
        fitted = fit([r for r in results if r["device"] == "cpu" and r["dtype"] == "fp32"])
        data = json.loads(FIT_FILE.read_text()) if FIT_FILE.is_file() else {"presets": {}}
        data["presets"].update(fitted)
        data["measured"] = (
            f"CPU fp32, {time.strftime('%Y-%m-%d')}, benchmarks/bench_scale.py rows "
            + "; ".join(f"{p}: {', '.join(v['rows'])}" for p, v in data["presets"].items())
        )
        FIT_FILE.write_text(json.dumps(data, indent=2) + "\n")
        print(f"fit -> {FIT_FILE}: {json.dumps(fitted)}", file=sys.stderr)
    print(write_result("scale", {"args": vars(args), "rows": results}))
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
