"""Peak RSS of one `vggtctl infer`-style forward in this fresh process, the protocol of the memory fit.

    forward_peak.py [--weights FILE] [--preset P] [--random-1b] FRAMES HEIGHT WIDTH [CHUNK OVERLAP]

As ``benchmarks/bench_scale.py`` measures the rows the fit (``vggtctl/services/memory_fit.json``) came
from: load a checkpoint *file* through ``load_model`` (``--weights``; default the seeded tiny checkpoint),
page every weight in, then run ``predict`` (or ``predict_chunked``) on seeded random images. Prints
``{"peak_bytes": VmHWM, "library_bytes": ..., "stages": {...}}`` as JSON, with VmHWM/VmRSS/RssFile (bytes)
after import, load, forward. ``library_bytes`` (resident pages of mapped files other than the checkpoint, at
the end) is what the page cache decides, not the run: freshly installed libraries showed ~100 MiB more of it
than the same files after a cache drop.
``--random-1b`` writes random VGGT-1B-shaped weights to ``--weights`` first when the file is missing
(``benchmarks/bench_model.py``'s streamed writer, about 1 minute and 5 GB of disk).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def _status() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("VmHWM", "VmRSS", "RssFile"):
            out[key] = int(line.split()[1]) * 1024
    return out


def _library_pages(weights: str | None) -> int:
    """Resident bytes of file mappings other than the checkpoint (shared libraries, mostly): the checkpoint
    may be memory-mapped, and its pages are the weights, which the estimate counts."""
    skip = str(Path(weights).resolve()) if weights else None
    total, counting = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            path = head[5] if len(head) > 5 else ""
            counting = path.startswith("/") and path != skip
        elif counting and head and head[0] == "Rss:":
            total += int(head[1]) * 1024
    return total


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--random-1b", action="store_true")
    ap.add_argument("shape", nargs="+", type=int)
    args = ap.parse_args()
    s, h, w = args.shape[:3]
    chunk = args.shape[3:5]
    if args.random_1b and not Path(args.weights).is_file():
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from bench_model import make_random_weights

        make_random_weights(Path(args.weights), "vggt-1b")
    import torch

    from vggtctl import load_model
    from vggtctl.services.infer import predict
    from vggtctl.services.infer_chunked import predict_chunked

    stages = {"import": _status()}
    model = load_model(args.weights or "tiny", preset=args.preset)
    with torch.inference_mode():  # a forward reads every weight; count them all, as the fit rows do
        sum(float(p.float().sum()) for p in model.parameters())
    stages["load"] = _status()
    images = np.random.default_rng(0).random((s, 3, h, w), dtype=np.float32)
    if chunk:
        predict_chunked(lambda x: predict(model, x), images, chunk[0], chunk[1])
    else:
        predict(model, images)
    stages["forward"] = _status()
    end = stages["forward"]
    libs = _library_pages(args.weights)
    print(json.dumps({"peak_bytes": end["VmHWM"], "library_bytes": libs, "stages": stages}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
