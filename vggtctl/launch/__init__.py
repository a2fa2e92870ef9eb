"""The GPU-aware launcher every multi-process command shares (``finetune``, ``cache build``, ``infer``, ...).

One command line works from one CPU to many nodes: the command declares its worker, the launcher decides
how to start it (in this process, under ``torchrun``, or under the ``deepspeed`` runner) and runs it.

How a command uses it::

    from vggtctl.launch import LaunchRequest, Worker, launch

    request = LaunchRequest(nproc_per_node=2, device="cpu")        # from the shared CLI options
    worker = Worker("vggtctl.services.finetune.worker", ["--run-dir", str(run)])
    code = launch(request, worker, log_dir=run / "logs")            # the workers' exit code

- **Worker entry point**: an importable module with ``main(argv: list[str]) -> int``. Every rank calls it
  with ``worker.argv`` (plain strings: large inputs go in a file the argv names, e.g. the run's
  ``config.yaml``). In-process plans call it directly; torchrun plans run
  ``python -m torch.distributed.run ... -m vggtctl.launch.entry --log-dir DIR MODULE ARGS``, which tees each
  rank's output into ``DIR/rank{N}.log`` and records its exit code.
- **Rank and world size** inside the worker: :func:`vggtctl.runtime.dist.dist_info` (``RANK``,
  ``LOCAL_RANK``, ``WORLD_SIZE`` as torchrun sets them, else SLURM's, else rank 0 of 1);
  :func:`vggtctl.runtime.dist.init_distributed` joins the process group (NCCL on GPUs, gloo on CPU) when
  the world is larger than one. Only rank 0 writes run files (:class:`vggtctl.runs.RunDir`).
- **Already inside torchrun** (``LOCAL_RANK`` set, e.g. a user's own ``torchrun -m vggtctl finetune``):
  the plan is in-process, so the command never launches itself twice.
- ``build_plan(request, detected, environ)`` is pure (tests give it any machine and environment);
  ``detect()`` gathers the machine's facts; ``plan_for(request)`` does both; ``run_plan`` executes a plan;
  ``launch`` is ``plan_for`` + ``run_plan``. ``worker_command(plan, worker, log_dir, node_rank=K)`` is the
  command node K runs (``--dry-run`` prints it for each node).
- **Ports**: a one-node torchrun plan with no port given lets torchrun bind one; a one-node deepspeed-runner
  plan with no port given is ``port_movable``: ``run_plan`` holds its port until the end and launches again
  on a fresh one when rank 0 still finds it taken (:mod:`vggtctl.launch.port_hold`). A port the user gave,
  or one several nodes dial, found taken that way is a :class:`~vggtctl.errors.LaunchError` (exit 1).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from vggtctl.launch.detect import detect
from vggtctl.launch.plan import (
    DEFAULT_PORT,
    LAUNCHERS,
    ZERO_PRESETS,
    Detected,
    LaunchPlan,
    LaunchRequest,
    build_plan,
)
from vggtctl.launch.runner import Worker, exit_code, run_plan, worker_command


def _ports(request: LaunchRequest, environ: Mapping[str, str]) -> list[int]:
    ports = [DEFAULT_PORT]
    if request.master_port is not None:
        ports.append(request.master_port)
    raw = environ.get("MASTER_PORT", "").strip()
    if raw.isdigit():
        ports.append(int(raw))
    return ports


def plan_for(request: LaunchRequest, environ: Mapping[str, str] | None = None) -> LaunchPlan:
    """Detect this machine and build the plan for ``request`` (raises ``ConfigError`` on bad requests)."""
    env = os.environ if environ is None else environ
    return build_plan(request, detect(_ports(request, env)), env)


def launch(request: LaunchRequest, worker: Worker, log_dir: Path) -> int:
    """Plan and run ``worker``; returns the exit code (see :mod:`vggtctl.launch.runner`)."""
    return run_plan(plan_for(request), worker, log_dir)


__all__ = [
    "LAUNCHERS",
    "ZERO_PRESETS",
    "Detected",
    "LaunchPlan",
    "LaunchRequest",
    "Worker",
    "build_plan",
    "detect",
    "exit_code",
    "launch",
    "plan_for",
    "run_plan",
    "worker_command",
]
