"""GEMM kernel choices behind the VGGT block (docs/performance.md, "What was optimised").

For the MLP's first layer at 1×518² (1,374 tokens × 1,024 → 4,096) and 1×224² (261 tokens) it times,
interleaved and repeated (this VM drifts, so min and p25 are reported):

- ``onednn_gelu_fused``: oneDNN linear with its fused ``gelu`` post-op;
- ``onednn_then_gelu``: oneDNN linear, then exact GELU in place (what ``layers.dense`` does);
- ``mkl_then_gelu``: ``F.linear`` (MKL) then GELU;
- ``onednn_bare``: the bare oneDNN GEMM (no bias, no GELU), to compare with the next two;
- ``onednn_prepacked``: bare GEMM with weights pre-packed as mkldnn tensors (needs a second copy);
- ``numpy_openblas``: bare GEMM with numpy's own BLAS.

    python benchmarks/bench_kernels.py [--reps 15]

Writes ``benchmarks/results/kernels.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_result  # noqa: E402


def _variants(tokens: int, layers: int = 8) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, 1024, generator=g)
    ws = [torch.randn(4096, 1024, generator=g) / 32 for _ in range(layers)]
    b = torch.randn(4096, generator=g)
    xm, wm = x.to_mkldnn(), [w.to_mkldnn() for w in ws]
    xn, wn = x.numpy(), [w.numpy() for w in ws]
    lin = torch.ops.mkldnn._linear_pointwise

    def fused() -> None:
        for w in ws:
            lin(x, w, b, "gelu", [], "none")

    def separate() -> None:
        for w in ws:
            torch._C._nn.gelu_(lin(x, w, b, "none", [], "none"))

    def mkl() -> None:
        for w in ws:
            F.gelu(F.linear(x, w, b))

    def bare() -> None:
        for w in ws:
            lin(x, w, None, "none", [], "none")

    def prepacked() -> None:
        for w in wm:
            torch._C._nn.mkldnn_linear(xm, w, None)

    def openblas() -> None:
        for w in wn:
            np.matmul(xn, w.T)

    return {
        "onednn_gelu_fused": fused,
        "onednn_then_gelu": separate,
        "mkl_then_gelu": mkl,
        "onednn_bare": bare,
        "onednn_prepacked": prepacked,
        "numpy_openblas": openblas,
    }


def run(tokens: int, reps: int, layers: int = 8) -> dict:
    import torch

    variants = _variants(tokens, layers)
    times: dict[str, list[float]] = {k: [] for k in variants}
    with torch.no_grad():
        for f in variants.values():
            f()  # warm-up
        for _ in range(reps):
            for name, f in variants.items():
                t = time.perf_counter()
                f()
                times[name].append((time.perf_counter() - t) / layers * 1000)
    flops = 2 * tokens * 1024 * 4096
    out = {}
    for name, ts in times.items():
        ts.sort()
        out[name] = {
            "min_ms": round(ts[0], 2),
            "p25_ms": round(ts[len(ts) // 4], 2),
            "median_ms": round(ts[len(ts) // 2], 2),
            "gflops_at_min": round(flops / ts[0] / 1e6, 1),
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=15)
    args, _ = ap.parse_known_args()  # run_all.py passes its extra arguments to every benchmark
    import torch

    results = {}
    for tokens in (1374, 261):
        results[f"fc1_{tokens}x1024x4096"] = rows = run(tokens, args.reps)
        print(f"fc1 {tokens}x1024->4096 (ms per GEMM, min / p25, threads={torch.get_num_threads()}):")
        for name, r in rows.items():
            print(f"  {name:20s} {r['min_ms']:7.2f} / {r['p25_ms']:7.2f}  ({r['gflops_at_min']} GFLOP/s)")
    path = write_result("kernels", {"reps": args.reps, "results": results})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
