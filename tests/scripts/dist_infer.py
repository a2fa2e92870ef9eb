"""One rank of the frames-across-devices equality test (run by torch.distributed.run, 2 processes on gloo).

Every rank loads the tiny model, runs ``predict_distributed`` on the same seeded images; rank 0 also runs
the single-process ``predict`` and writes the largest differences to ``argv[1]`` as JSON.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
import torch.distributed as dist

from vggtctl import load_model
from vggtctl.services.infer import predict
from vggtctl.services.infer_dist import predict_distributed


def main() -> int:
    out_path, frames = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    model = load_model("tiny")
    images = np.random.default_rng(0).random((frames, 3, 56, 84), dtype=np.float32)
    preds = predict_distributed(model, images)
    if dist.get_rank() == 0:
        ref = predict(model, images)
        diffs = {k: float(np.abs(preds[k] - ref[k]).max()) for k in ref if k in preds}
        scales = {k: float(np.abs(ref[k]).max()) for k in ref if k in preds}
        missing = sorted(set(ref) - set(preds))
        with open(out_path, "w") as f:
            json.dump(
                {"world": dist.get_world_size(), "diffs": diffs, "scales": scales, "missing": missing}, f
            )
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
