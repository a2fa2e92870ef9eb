"""bf16 loading of a prefixed checkpoint: peak RSS and time of ``read_state_dict`` per wrapper prefix.

A float32 safetensors file shaped like the aggregator's Linear layers (``--mb`` of weights) is written
once with each prefix a wrapper adds (none, ``module.`` from DDP, ``_orig_mod.`` from torch.compile,
``model.``); each is read for a bf16 model in a fresh process (clean peak RSS), next to the memory-map
baseline (``safetensors.load_file`` then ``.to(bf16)``). The convert-while-reading path peaks near the
bf16 result; a prefix the loader did not resolve fell back to float32 copies (the file's size again).

    python benchmarks/bench_loader.py [--mb 512]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import write_result  # noqa: E402

PREFIXES = ("", "module.", "_orig_mod.", "model.")


def _write(path: Path, prefix: str, mb: int) -> None:
    import torch
    from safetensors.torch import save_file

    n = max(1, mb // 16)  # 16 MB per [1024, 4096] float32 tensor
    g = torch.Generator().manual_seed(0)
    sd = {
        f"{prefix}aggregator.frame_blocks.{i}.mlp.fc1.weight": torch.randn(1024, 4096, generator=g)
        for i in range(n)
    }
    save_file(sd, str(path))


def _status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process's memory map. ru_maxrss would not do here: Linux
    carries the forking parent's peak across exec into the child's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _child(path: str, mode: str) -> None:
    import torch
    from safetensors.torch import load_file

    from vggtctl.services.model_loader import read_state_dict

    base = _status_mb("VmRSS")  # after the imports: what the read itself adds is measured
    t0 = time.perf_counter()
    if mode == "mmap":
        sd = {k: v.to(torch.bfloat16) for k, v in load_file(path).items()}
    else:
        sd, _ = read_state_dict(path, torch.bfloat16)
    seconds = time.perf_counter() - t0
    result_mb = sum(v.numel() * v.element_size() for v in sd.values()) / 2**20
    print(json.dumps({
        "seconds": round(seconds, 3),
        "rss_after_imports_mb": round(base, 1),
        "peak_rss_mb": round(_status_mb("VmHWM"), 1),
        "peak_above_imports_mb": round(_status_mb("VmHWM") - base, 1),
        "result_mb": round(result_mb, 1),
        "bf16_fraction": sum(v.dtype == torch.bfloat16 for v in sd.values()) / len(sd),
    }))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mb", type=int, default=512, help="float32 size of the synthetic checkpoint")
    ap.add_argument("--child", nargs=2, metavar=("PATH", "MODE"), help=argparse.SUPPRESS)
    args, _ = ap.parse_known_args()
    if args.child:
        return _child(*args.child)
    rows = []
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as tmp:
        for prefix in PREFIXES:
            path = Path(tmp) / f"ckpt{prefix.strip('.') or '-bare'}.safetensors"
            _write(path, prefix, args.mb)
            for mode in ("loader", "mmap") if prefix == "" else ("loader",):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", str(path), mode],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                rows.append(
                    {"prefix": prefix or "(none)", "mode": mode, "file_mb": args.mb, **json.loads(out)}
                )
                print(rows[-1], flush=True)
            path.unlink()
    print(write_result("loader", {"rows": rows}))


if __name__ == "__main__":
    main()
