"""Peak RSS of one `vggtctl infer`-style forward in this fresh process: argv = frames height width [chunk overlap].

Loads the tiny model through ``load_model``, runs ``predict`` (or ``predict_chunked``) on seeded random
images and prints ``{"peak_bytes": VmHWM}`` as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main() -> int:
    s, h, w = (int(v) for v in sys.argv[1:4])
    chunk = [int(v) for v in sys.argv[4:6]]
    from vggtctl import load_model
    from vggtctl.services.infer import predict
    from vggtctl.services.infer_chunked import predict_chunked

    model = load_model("tiny")
    images = np.random.default_rng(0).random((s, 3, h, w), dtype=np.float32)
    if chunk:
        predict_chunked(lambda x: predict(model, x), images, chunk[0], chunk[1])
    else:
        predict(model, images)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            print(json.dumps({"peak_bytes": int(line.split()[1]) * 1024}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
