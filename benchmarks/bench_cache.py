"""VLN feature cache: live streaming encode vs cache read per 9-frame sample, and build throughput.

Generated 640×480 episodes (JanusVLN's frame size) go through JanusVLN's preprocessing (width 644,
bicubic, → 490×644). Per 9-frame sample it times (median of ``--repeats``):

- ``live_preprocess_s``: loading + resizing the 9 PNGs;
- ``live_stream_s``: the streaming VGGT pass over them (what training does without a cache), timed as the
  encode phase of a build of that one sample;
- ``cache_lookup_s``: ``FeatureCache.lookup`` on a warm process (frame hashes memoised), which reads and
  decodes the entry; ``cache_lookup_cold_s`` also hashes the 9 frame files.

Then it builds the cache of ``--build-samples`` samples (episodes of 2 frames: 2 samples per pass) with ``vggtctl cache build`` in 1 and 2
processes (the shared launcher; gloo on CPU) and reports samples/s of the whole command and of the
encode phase. Defaults: the tiny model on CPU. With a GPU: ``--model facebook/VGGT-1B --device cuda``.

    python benchmarks/bench_cache.py [--model tiny] [--device cpu] [--repeats 3] [--build-samples 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import write_result  # noqa: E402
from tests.helpers_vln import write_episode  # noqa: E402  (the cache tests' generated trajectories)

ROOT = Path(__file__).resolve().parents[1]
FRAME = (640, 480)  # JanusVLN's frame size


def _median(fn, repeats: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _build(data: Path, cache_dir: Path, args: argparse.Namespace, nproc: int) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "vggtctl",
        "cache",
        "build",
        "--data",
        str(data),
        "--cache-dir",
        str(cache_dir),
    ]
    cmd += ["--model", args.model, "--device", args.device, "--nproc-per-node", str(nproc), "--json"]
    cmd += ["--max-samples", str(args.build_samples)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"cache build failed ({proc.returncode}): {proc.stderr[-2000:]}")
    doc = json.loads(proc.stdout)
    return {
        "processes": nproc,
        "samples": doc["computed"],
        "passes": doc["passes"],
        "wall_s": round(wall, 2),
        "samples_per_s_wall": round(doc["computed"] / wall, 3),
        "encode_s_rank0": doc["timings_s"].get("encode"),
        "bytes_written": doc["bytes_written"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--repeats", type=int, default=3, help="for the cheap timings")
    ap.add_argument("--build-samples", type=int, default=8)
    ap.add_argument("--no-build", action="store_true", help="skip the 1 vs 2 process build timing")
    args = ap.parse_args()

    import torch

    from vggtctl.services.vlncache.build import BuildConfig, build_cache
    from vggtctl.services.vlncache.encode import FeatureEncoder
    from vggtctl.services.vlncache.reader import open_cache
    from vggtctl.services.vlncache.records import read_samples
    from vggtctl.services.vlncache.worker import load_for_spec, make_spec

    with tempfile.TemporaryDirectory(prefix="bench_cache_") as tmp:
        root = Path(tmp)
        frames = write_episode(root / "frames", 9, seed=0, size=FRAME)
        data = root / "nine.jsonl"
        data.write_text(json.dumps({"id": "ep0/step_0008", "images": [str(f) for f in frames]}) + "\n")
        nine = read_samples(data)[0]

        model, compute = load_for_spec(args.model, None, None, args.device, args.dtype)
        spec = make_spec(model, compute, 22, 644, "crop", args.dtype, "streaming")
        enc = FeatureEncoder(model, spec)
        live_pre = _median(lambda: enc.images(nine.frames), args.repeats)
        images = enc.images(nine.frames)

        # The live streaming encode of the sample is exactly what a build computes for it: build a cache of
        # this one sample and take its encode time (9 frame steps + the entry write).
        cache_dir = root / "cache"
        t0 = time.perf_counter()
        built = build_cache(
            BuildConfig(
                data=data, cache_dir=cache_dir, model=args.model, device=args.device, dtype=args.dtype
            )
        )
        live_build_s = time.perf_counter() - t0
        live_stream = built.timings_s["encode"]
        reader = open_cache(cache_dir, model, dtype=args.dtype)
        from vggtctl.services.vlncache import entries

        def cold() -> None:
            entries._hashes.clear()
            assert reader.lookup(nine) is not None

        lookup_cold = _median(cold, max(args.repeats, 5))
        lookup_warm = _median(lambda: reader.lookup(nine), max(args.repeats, 20))
        entry_mib = reader.cache.entry_path(reader.key(nine)).stat().st_size / 2**20
        stream = model.aggregator.stream(layers=(22,))
        stream.step(images[0])
        live = live_pre + live_stream
        result = {
            "model": args.model,
            "device": str(enc.device),
            "storage_dtype": args.dtype,
            "compute_dtype": compute,
            "input_hw": list(images.shape[-2:]),
            "frames_per_sample": 9,
            "tokens_per_frame": int(images.shape[-2] // 14 * (images.shape[-1] // 14) + 5),
            "entry_mib": round(entry_mib, 3),
            "kv_bytes_per_frame": stream.bytes_per_frame,
            "live_preprocess_s": round(live_pre, 4),
            "live_stream_s": round(live_stream, 3),
            "live_total_s": round(live, 3),
            "single_sample_build_s": round(live_build_s, 3),
            "cache_lookup_s": round(lookup_warm, 5),
            "cache_lookup_cold_s": round(lookup_cold, 5),
            "speedup_warm": round(live / lookup_warm, 1),
            "speedup_cold": round(live / lookup_cold, 1),
            "torch_threads": torch.get_num_threads(),
        }
        if not args.no_build:
            # Build throughput: episodes of 2 frames (2 samples share each pass), so the passes split over ranks.
            for k in range(args.build_samples // 2):
                write_episode(root / "episodes" / f"ep{k}", 2, seed=100 + k, size=FRAME)
            result["build"] = [_build(root / "episodes", root / f"build{n}", args, n) for n in (1, 2)]
    path = write_result("cache", result)
    print(json.dumps(result, indent=2))
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
