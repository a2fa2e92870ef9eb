"""What every launched command does with the shared launch options: build the request, show or run the plan.

A command declares its options with the aliases of :mod:`vggtctl.cli.options` (``NprocOption``, ...),
then calls :func:`launch_request` and :func:`dry_run_document` / :func:`render_dry_run`. Nothing here imports torch.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vggtctl.launch import LaunchPlan, LaunchRequest, Worker, worker_command


def launch_request(
    *,
    nproc_per_node: int | None,
    nnodes: int | None,
    node_rank: int | None,
    master_addr: str | None,
    master_port: int | None,
    launcher: Any,
    deepspeed: str | None,
    device: str = "auto",
    nccl: Mapping[str, str] | None = None,
    hostfile: str | None = None,
) -> LaunchRequest:
    """The :class:`LaunchRequest` of the shared options (``launcher`` may be the CLI's enum)."""
    return LaunchRequest(
        nproc_per_node=nproc_per_node,
        nnodes=nnodes,
        node_rank=node_rank,
        master_addr=master_addr,
        master_port=master_port,
        launcher=getattr(launcher, "value", launcher),
        deepspeed=deepspeed,
        device=device,
        nccl=dict(nccl or {}),
        hostfile=hostfile,
    )


def dry_run_document(plan: LaunchPlan, worker: Worker, log_dir: Path) -> dict[str, Any]:
    """The plan plus the exact command of every node (one node's own when in-process)."""
    doc = plan.to_dict()
    nodes = range(plan.nnodes) if plan.backend == "torchrun" else [plan.node_rank]
    doc["commands"] = {str(k): worker_command(plan, worker, log_dir, node_rank=k) for k in nodes}
    return doc


def render_dry_run(console: Any, doc: Mapping[str, Any]) -> None:
    """The human form of :func:`dry_run_document`."""
    console.print(
        f"backend {doc['backend']}: {doc['nnodes']} node(s) x {doc['nproc_per_node']} process(es) = "
        f"world size {doc['world_size']}; this is node {doc['node_rank']}",
        markup=False,
    )
    console.print(f"rendezvous {doc['rendezvous']}", markup=False)
    if doc["env"]:
        console.print(
            "environment added: " + " ".join(f"{k}={v}" for k, v in doc["env"].items()), markup=False
        )
    if doc["defaulted"]:
        console.print("defaulted: " + ", ".join(doc["defaulted"]), markup=False)
    if doc["source"]:
        console.print("from: " + ", ".join(f"{k}={v}" for k, v in doc["source"].items()), markup=False)
    if doc.get("deepspeed"):
        console.print(f"deepspeed: {doc['deepspeed']}", markup=False)
    for warning in doc["warnings"]:
        console.print(f"warning: {warning}", markup=False)
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in doc["env"].items())
    for node, argv in doc["commands"].items():
        console.print(
            f"node {node}: {(env + ' ') if env else ''}{shlex.join(argv)}", markup=False, soft_wrap=True
        )
