"""Dynamic int8 VGGT-1B vs float32 on this CPU: artifact size, latency, peak load memory, output error.

The 1B architecture with seeded random weights (size and speed do not depend on the values; the
output error of trained weights differs, see docs/quantize.md). Writes the float32 safetensors
(~5 GB) and the artifact into a temp folder, quantizes through the real service
(``--type dynamic --quantize-heads``), then in one process, with the same thread count, loads each
model (peak RSS during the load, VmHWM reset between) and times ``--repeats`` forwards per image
size (median, after one warm-up). Run it under the heavy-memory lock:

    flock /work/locks/heavy.lock python benchmarks/bench_quantize.py [--sizes 224,518] [--frames 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine, write_result  # noqa: E402


def _write_float(path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from vggtctl.models.vggt.config import get_config
    from vggtctl.models.vggt.model import VGGT

    torch.manual_seed(0)
    model = VGGT(get_config("vggt-1b"))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def _time(model: object, x: object, repeats: int) -> tuple[float, list[float], dict]:
    from vggtctl.services.infer import predict

    preds = predict(model, x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict(model, x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, preds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="224,518")
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import torch

    from vggtctl.services.model_loader import load_model
    from vggtctl.services.quantize import QuantizeConfig
    from vggtctl.services.quantize.compare import output_errors, peak_rss
    from vggtctl.services.quantize.run import quantize

    result: dict = {"machine": machine(), "frames": args.frames, "repeats": args.repeats, "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="bench-quantize-") as tmp:
        float_file = Path(tmp) / "model.safetensors"
        t0 = time.perf_counter()
        _write_float(float_file)
        result["write_float_s"] = time.perf_counter() - t0
        art = Path(tmp) / "int8"
        t0 = time.perf_counter()
        q = quantize(
            QuantizeConfig(
                model=str(float_file),
                out=art,
                type="dynamic",
                quantize_heads=True,
                compare=False,
                device="cpu",
            )
        )
        result["quantize_s"] = time.perf_counter() - t0
        result["layers"] = q.layers
        result["float_file_bytes"] = float_file.stat().st_size
        result["int8_file_bytes"] = q.file_bytes
        result["size_ratio"] = q.file_bytes / float_file.stat().st_size
        models = {}
        for name, src in (("fp32", float_file), ("int8_dynamic", art)):
            with peak_rss() as mem:
                t0 = time.perf_counter()
                models[name] = load_model(src)
                load_s = time.perf_counter() - t0
            result[f"{name}_load_s"] = load_s
            result[f"{name}_peak_load_bytes"] = mem["peak_bytes"]
        result["threads"] = torch.get_num_threads()
        g = torch.Generator().manual_seed(0)
        for size in (int(s) for s in args.sizes.split(",")):
            x = torch.rand(args.frames, 3, size, size, generator=g)
            row: dict = {}
            outs = {}
            for name, model in models.items():
                median, times, preds = _time(model, x, args.repeats)
                row[f"{name}_s_median"] = median
                row[f"{name}_s_all"] = times
                outs[name] = preds
            row["speedup"] = row["fp32_s_median"] / row["int8_dynamic_s_median"]
            row["error"] = output_errors(outs["fp32"], outs["int8_dynamic"])
            result["sizes"][str(size)] = row
            print(
                f"{size}: fp32 {row['fp32_s_median']:.2f}s int8 {row['int8_dynamic_s_median']:.2f}s "
                f"({row['speedup']:.2f}x)",
                file=sys.stderr,
            )
    print(write_result("quantize", result, args.out))


if __name__ == "__main__":
    main()
