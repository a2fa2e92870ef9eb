"""The VLN feature cache end to end on the tiny model: trajectory folders → build → verify → read.

    python examples/vln_cache.py [WORKDIR]

Writes two generated episodes of 640×480 frames (``step_XXXX_<action>.png``, JanusVLN's trajectory
layout), builds the cache (at width 224 to stay short on a CPU; JanusVLN uses 644 → 490×644),
verifies it against the live causal pass, and reads the features back the way a trainer does. CPU only.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

import vggtctl
from vggtctl.services.vlncache.build import BuildConfig, build_cache
from vggtctl.services.vlncache.maintain import cache_stats
from vggtctl.services.vlncache.reader import open_cache
from vggtctl.services.vlncache.records import read_samples
from vggtctl.services.vlncache.verify import VerifyConfig, verify_cache


def write_episode(folder: Path, steps: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(steps):
        small = rng.integers(0, 255, (49, 65, 3), dtype=np.uint8)
        action = "stop" if i == steps - 1 else "move_forward"
        Image.fromarray(small).resize((640, 480), Image.Resampling.BILINEAR).save(
            folder / f"step_{i:04d}_{action}.png"
        )


def main(work: Path) -> None:
    for k, steps in enumerate((3, 11)):
        write_episode(work / "trajectories" / f"episode_{k}", steps, seed=k)
    data, cache_dir = work / "trajectories", work / "vggt_cache"

    # JanusVLN builds at --image-width 644 (490×644); 224 keeps this CPU demo short.
    config = BuildConfig(data=data, cache_dir=cache_dir, model="tiny", device="cpu", image_width=224)
    result = build_cache(config)
    print(
        f"built {result.computed} entries in {result.passes} streaming passes, {result.bytes_written:,} bytes"
    )
    stats = cache_stats(cache_dir, data)
    print(
        f"coverage {stats.coverage['cached']}/{stats.coverage['samples']}, spec {stats.spec['history']} "
        f"width {stats.spec['image_width']} layer {stats.spec['layer']} {stats.spec['dtype']}"
    )
    report = verify_cache(VerifyConfig(cache_dir=cache_dir, samples=3, device="cpu"))
    print(
        f"verify: ok={report.ok}, worst rel. error {report.worst_rel_error:.2e} (tolerance {report.tolerance:.2e})"
    )

    model = vggtctl.load_model("tiny")
    reader = open_cache(cache_dir, model, image_width=224)  # layer 22, bf16, streaming: the defaults
    sample = read_samples(data)[-1]  # the last step: 9 frames (linspace history)
    features = reader.lookup(sample)  # [P, 2C] or None on a miss
    print(f"{sample.id}: {len(sample.frames)} frames -> features {tuple(features.shape)} {features.dtype}")
    print(f"reader: {reader.stats()}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
