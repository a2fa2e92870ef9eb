"""Int8 VGGT-1B vs float32 on this CPU: artifact size, latency, peak load memory, output error.

The 1B architecture with seeded random weights (size and speed do not depend on the values; the
output error of trained weights differs, see docs/quantize.md). Writes the float32 safetensors
(~5 GB) and the artifact into a temp folder, quantizes through the real service
(``--type dynamic --quantize-heads``), then in one process, with the same thread count, loads each
model (peak RSS during the load, VmHWM reset between) and times ``--repeats`` forwards per image
size (median, after one warm-up). Peak memory is also measured the way the report does it: each
model's load + one forward in a child process of its own (``own_process``), so the float model
loaded first does not inflate the int8 figure.

``--static-presets tiny,vggt-1b`` adds the static int8 kernel: per preset, in one process at
``--static-size`` (224), fp32 vs static int8 computed in int8 (``torch._int_mm``) vs the same
static int8 simulated with a float GEMM (the pre-kernel path). The activation scales there are a
fixed stand-in (speed does not depend on their values; the real calibrated error is the tiny
model's report, tests/test_quantize.py). Run it under the heavy-memory lock:

    flock /work/locks/heavy.lock python benchmarks/bench_quantize.py [--sizes 224,518] [--frames 2] \
        [--repeats 3] [--static-presets tiny,vggt-1b]

``--device cuda`` measures only the device rows instead (``benchmarks/gpu_check.sh``): the 1B architecture
built seeded straight on the device (no float file written), float vs per scheme
(int8 dynamic / weight-only, fp8 weight-only / dynamic through the real ``apply_schemes``) parameter memory,
peak memory of a forward (``torch.cuda.max_memory_allocated``), median latency (synchronized) and the output
error vs fp32, each without autocast and under bf16 autocast. ``--device cpu --device-preset tiny --schemes
int8-weight --sizes 56`` smoke-tests it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

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


def _static_rows(preset: str, size: int, frames: int, repeats: int) -> dict:
    """fp32 vs static int8 (int8 GEMM) vs static int8 simulated, one process, same threads.

    The three are timed in interleaved rounds (fp32, kernel, simulated; ``repeats`` times after a
    warm-up of each), so a change in the shared machine's load hits all three alike.
    """
    import copy

    import torch

    from vggtctl.models.vggt.config import get_config
    from vggtctl.models.vggt.model import VGGT
    from vggtctl.services.infer import predict
    from vggtctl.services.quantize.apply import apply_schemes
    from vggtctl.services.quantize.compare import output_errors
    from vggtctl.services.quantize.modules import StaticInt8Linear
    from vggtctl.services.quantize.selection import plan_layers

    torch.manual_seed(0)
    model = VGGT(get_config(preset)).eval()
    x = torch.rand(frames, 3, size, size, generator=torch.Generator().manual_seed(0))
    quantized = copy.deepcopy(model)
    # Stand-in activation scales (4 / 127 for every layer): speed does not depend on the values.
    plans, _ = plan_layers(quantized, attention=True, heads=True, patch_embed=True, rotate=False)
    layers = [{**p.to_dict(), "scheme": "int8-static" if p.op == "linear" else "int8-weight"} for p in plans]
    apply_schemes(quantized, layers, {p.name: 4.0 / 127 for p in plans}, per_tensor_weight=False)
    variants = {
        "fp32": (model, True),
        "int8_static_kernel": (quantized, True),
        "int8_static_simulated": (quantized, False),
    }
    row: dict = {"preset": preset, "size": size, "frames": frames, "threads": torch.get_num_threads()}
    row["static_layers"] = sum(layer["scheme"] == "int8-static" for layer in layers)
    times: dict[str, list[float]] = {name: [] for name in variants}
    preds: dict[str, dict] = {}
    try:
        for round_ in range(repeats + 1):
            for name, (m, kernel) in variants.items():
                StaticInt8Linear.int_kernel = kernel
                t0 = time.perf_counter()
                out = predict(m, x)
                if round_ == 0:
                    preds[name] = out  # warm-up round: outputs kept, time not
                else:
                    times[name].append(time.perf_counter() - t0)
    finally:
        StaticInt8Linear.int_kernel = True
    for name in variants:
        row[f"{name}_s_median"], row[f"{name}_s_all"] = statistics.median(times[name]), times[name]
        if name != "fp32":
            row[f"{name}_error_vs_fp32"] = output_errors(preds["fp32"], preds[name])
    row["speedup_kernel_vs_fp32"] = row["fp32_s_median"] / row["int8_static_kernel_s_median"]
    row["speedup_kernel_vs_simulated"] = (
        row["int8_static_simulated_s_median"] / row["int8_static_kernel_s_median"]
    )
    del model, quantized
    return row


def _device_rows(
    preset: str, device: str, sizes: list[int], frames: int, repeats: int, schemes: list[str]
) -> dict:
    """Float vs quantized schemes on ``device``, one process, seeded fp32 weights built on the device.

    Each scheme runs twice per size: without autocast (fp32 activations, what the quantize service's
    report compares) and under bf16 autocast (what ``infer --dtype bf16`` does on CUDA: fp32 weights,
    bf16 compute). Errors are against the fp32 model without autocast.
    """
    import copy

    import torch

    from vggtctl.models.vggt.config import get_config
    from vggtctl.models.vggt.model import VGGT
    from vggtctl.services.infer import predict
    from vggtctl.services.quantize.apply import apply_schemes, scheme_for
    from vggtctl.services.quantize.compare import output_errors
    from vggtctl.services.quantize.selection import plan_layers

    cuda = device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(device):  # seeded init straight on the device: no float file, no host copy
        base = VGGT(get_config(preset)).eval().to(device)  # .to: any buffer made on the host
    sync()
    result: dict = {"preset": preset, "device": device, "frames": frames, "repeats": repeats}
    result["init_s"] = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    inputs = {size: torch.rand(frames, 3, size, size, generator=g) for size in sizes}
    reference: dict[int, dict] = {}
    rows = []
    for scheme in schemes:
        row: dict = {"scheme": scheme}
        try:
            model = base
            if scheme != "float":
                model = copy.deepcopy(base)
                qtype, wd = {
                    "int8-dynamic": ("dynamic", "int"),
                    "int8-weight": ("weight-only", "int"),
                    "fp8-weight": ("weight-only", "fp8"),
                    "fp8-dynamic": ("dynamic", "fp8"),
                }[scheme]
                plans, _ = plan_layers(model, attention=True, heads=True, patch_embed=True, rotate=False)
                layers = [{**p.to_dict(), "scheme": scheme_for(p.op, qtype, 8, False, wd)} for p in plans]
                t0 = time.perf_counter()
                apply_schemes(model, layers)
                sync()
                row["quantize_s"] = time.perf_counter() - t0
            if cuda:
                row["allocated_after_build_mb"] = round(torch.cuda.memory_allocated() / 2**20, 1)
            for size, x in inputs.items():
                for autocast in ("fp32", "bf16"):
                    key = f"{size}_{autocast}"
                    try:
                        if cuda:
                            torch.cuda.reset_peak_memory_stats()
                        xd = x.to(device)
                        preds = predict(model, xd, device=device, dtype=autocast)  # warm-up
                        times = []
                        for _ in range(repeats):
                            sync()
                            t0 = time.perf_counter()
                            predict(model, xd, device=device, dtype=autocast)
                            sync()
                            times.append(time.perf_counter() - t0)
                        cell: dict = {"s_median": statistics.median(times), "s_all": times}
                        if cuda:
                            cell["peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
                        if scheme == "float" and autocast == "fp32":
                            reference[size] = preds
                        elif size in reference:
                            cell["error_vs_fp32"] = output_errors(reference[size], preds)
                        ref_cell = rows[0].get(key, {}) if rows else {}
                        if "s_median" in ref_cell:
                            cell["speedup_vs_float_same_autocast"] = ref_cell["s_median"] / cell["s_median"]
                    except Exception as exc:  # e.g. a scheme without a bf16 kernel: keep the others
                        cell = {"error": f"{type(exc).__name__}: {exc}"[:400]}
                    row[key] = cell
                    print(f"{device} {scheme} {key}: {cell.get('s_median', cell.get('error'))} "
                          f"peak {cell.get('peak_mb')} MB", file=sys.stderr, flush=True)  # fmt: skip
            del model
        except Exception as exc:  # one scheme failing (e.g. no fp8 GEMM here) must not lose the others
            row["error"] = f"{type(exc).__name__}: {exc}"[:500]
            print(f"{device} {scheme}: {row['error']}", file=sys.stderr, flush=True)
        if cuda:
            torch.cuda.empty_cache()
        rows.append(row)
    result["rows"] = rows
    if cuda:
        result["gpu"] = torch.cuda.get_device_name(0)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="224,518")
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    parser.add_argument("--static-presets", default="", help="e.g. tiny,vggt-1b (empty: skip)")
    parser.add_argument("--static-size", type=int, default=224)
    parser.add_argument("--skip-dynamic", action="store_true", help="only the static section")
    parser.add_argument("--device", default=None, help="cuda: only the device rows (fp32/bf16 vs int8/fp8)")
    parser.add_argument("--device-preset", default="vggt-1b", help="preset of the device rows")
    parser.add_argument("--schemes", default="int8-dynamic,int8-weight,fp8-weight,fp8-dynamic")
    args = parser.parse_args()
    if args.device:
        sizes = [int(s) for s in args.sizes.split(",")]
        schemes = ["float"] + [s for s in args.schemes.split(",") if s and s != "float"]
        data = _device_rows(args.device_preset, args.device, sizes, args.frames, args.repeats, schemes)
        print(write_result(f"quantize_{args.device.split(':')[0]}", {"machine": machine(), **data}, args.out))
        return

    import torch

    from vggtctl.services.model_loader import load_model
    from vggtctl.services.quantize import QuantizeConfig
    from vggtctl.services.quantize.compare import output_errors, peak_rss
    from vggtctl.services.quantize.peak import child_peak
    from vggtctl.services.quantize.run import quantize

    result: dict = {"machine": machine(), "frames": args.frames, "repeats": args.repeats, "sizes": {}}
    result["static"] = [
        _static_rows(p, args.static_size, args.frames, args.repeats)
        for p in args.static_presets.split(",")
        if p
    ]
    for row in result["static"]:
        print(
            f"static {row['preset']} {row['size']}: fp32 {row['fp32_s_median']:.2f}s int8 kernel "
            f"{row['int8_static_kernel_s_median']:.2f}s simulated {row['int8_static_simulated_s_median']:.2f}s",
            file=sys.stderr,
        )
    if args.skip_dynamic:
        print(write_result("quantize", result, args.out))
        return
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
        first = int(args.sizes.split(",")[0])
        frames_file = Path(tmp) / "frames.npy"
        np.save(frames_file, torch.rand(args.frames, 3, first, first).numpy())
        for name, src in (("fp32", float_file), ("int8_dynamic", art)):
            result[f"{name}_own_process"] = child_peak(str(src), frames_file, "cpu", result["threads"])
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
