"""What each rank of a multi-device ``vggtctl infer`` runs (started by the shared launcher, issue 14).

``main([CONFIG_JSON, RESULT_JSON])``: join the process group (nccl on CUDA, gloo on CPU; one GPU per local rank), then
run the same inference as one process, with every forward split across the ranks by frames
(:mod:`vggtctl.services.infer_dist`). Rank 0 writes the outputs and the result document (``RESULT_JSON``,
which the command prints); the other ranks only compute.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from vggtctl.runtime.dist import dist_info
from vggtctl.utils.atomic import atomic_write_text


def main(argv: Sequence[str]) -> int:
    import torch
    import torch.distributed as dist

    from vggtctl.services.infer import InferConfig, run_inference

    raw = json.loads(argv[0])
    known = {f.name for f in fields(InferConfig)}
    config = InferConfig(**{k: v for k, v in raw.items() if k in known})
    config.out = Path(config.out)
    config.formats = tuple(config.formats)
    info = dist_info()
    cuda = config.device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(info.local_rank)
        config.device = f"cuda:{info.local_rank}"
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        result = run_inference(config)
        if info.is_rank_zero and result is not None and len(argv) > 1:
            atomic_write_text(Path(argv[1]), json.dumps(result.to_dict(), default=str) + "\n")
    finally:
        dist.destroy_process_group()
    return 0
