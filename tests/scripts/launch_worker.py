"""A worker for the launcher's tests: ``main(argv) -> int`` as every launched command's worker has.

Modes: ``allreduce OUT`` (gloo all-reduce of rank+1; rank 0 writes the sum and the ``MASTER_ADDR`` /
``MASTER_PORT`` its launcher gave it), ``exit RANK CODE`` (that rank
returns CODE, the others 0), ``kill RANK`` (that rank dies of SIGKILL), ``wait OUT`` (wait for SIGTERM;
each rank writes OUT.rankN and returns 143).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from vggtctl.runtime.dist import dist_info, init_distributed


def main(argv: list[str]) -> int:
    info = dist_info()
    print(f"hello from rank {info.rank} of {info.world_size}", flush=True)
    mode = argv[0]
    if mode == "allreduce":
        import torch
        import torch.distributed as dist

        init_distributed("cpu")
        t = torch.tensor([float(info.rank + 1)])
        dist.all_reduce(t)
        if info.rank == 0:
            master = {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT")}
            Path(argv[1]).write_text(json.dumps({"sum": t.item(), "world": info.world_size, **master}))
        dist.destroy_process_group()
        return 0
    if mode == "exit":
        return int(argv[2]) if info.rank == int(argv[1]) else 0
    if mode == "kill":
        if info.rank == int(argv[1]):
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(30)
        return 0
    if mode == "wait":
        got = []
        signal.signal(signal.SIGTERM, lambda s, f: got.append(s))
        Path(f"{argv[1]}.ready{info.rank}").write_text("")
        deadline = time.time() + 60
        while not got and time.time() < deadline:
            time.sleep(0.05)
        Path(f"{argv[1]}.rank{info.rank}").write_text(str(got))
        return 143 if got else 1
    print(f"unknown mode {mode}", file=sys.stderr)
    return 2
