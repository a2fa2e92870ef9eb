"""What every launched command does with the shared launch options: build the request, show or run the plan.

A command declares its options with the aliases of :mod:`vggtctl.cli.options` (``NprocOption``, ...),
bundles them in a :class:`LaunchArgs`, plans with :meth:`LaunchArgs.plan` and hands the plan to
:func:`dry_run_or_launch`: ``--dry-run`` prints it (human or ``--json``), a plan of several processes runs,
and ``None`` tells the command to do the work in-process itself. Nothing here imports torch.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vggtctl.errors import Problem, raise_problems
from vggtctl.launch import LaunchPlan, LaunchRequest, Worker, plan_for, run_plan, worker_command

if TYPE_CHECKING:
    from vggtctl.cli.output import Output


@dataclass(frozen=True)
class LaunchArgs:
    """The shared launch options of one command, as Typer parsed them (``launcher`` may be the CLI's enum)."""

    nproc_per_node: int | None = None
    nnodes: int | None = None
    node_rank: int | None = None
    master_addr: str | None = None
    master_port: int | None = None
    launcher: Any = "auto"
    hostfile: str | None = None

    def plan(
        self,
        *,
        device: str = "auto",
        deepspeed: str | None = None,
        nccl: Mapping[str, str] | None = None,
    ) -> LaunchPlan:
        """Detect this machine and plan the launch (``ConfigError``, exit 2, on bad options)."""
        if self.hostfile is not None and not Path(self.hostfile).is_file():
            raise_problems("launch options", [Problem.of("hostfile", "is not a file", self.hostfile)])
        return plan_for(
            launch_request(
                nproc_per_node=self.nproc_per_node,
                nnodes=self.nnodes,
                node_rank=self.node_rank,
                master_addr=self.master_addr,
                master_port=self.master_port,
                launcher=self.launcher,
                deepspeed=deepspeed,
                device=device,
                nccl=nccl,
                hostfile=self.hostfile,
            )
        )


def show_dry_run(
    plan: LaunchPlan,
    worker: Worker,
    log_dir: Path,
    output: Output,
    *,
    document: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    render: Callable[[Any, dict[str, Any]], None] | None = None,
) -> None:
    """``--dry-run``: the plan and the exact command of every node, as JSON or by ``render``.

    ``document`` makes the command's document from the launch one (default: the launch one alone);
    ``render`` is its human form (default: :func:`render_dry_run`).
    """
    doc = dry_run_document(plan, worker, log_dir)
    if document is not None:
        doc = document(doc)
    output.result(doc, lambda console: (render or render_dry_run)(console, doc))


def launch_workers(
    plan: LaunchPlan,
    worker: Worker,
    log_dir: Path,
    output: Output,
    *,
    before_launch: Callable[[], None] | None = None,
    in_process: bool | None = None,
) -> int | None:
    """Run ``plan``'s processes and return their exit code, or ``None``: the command runs in-process itself.

    ``in_process`` says whether the command does the work itself (default: when the plan is in-process);
    ``before_launch`` is called only when processes are launched (it writes the worker's config).
    """
    if in_process is None:
        in_process = plan.backend == "inprocess"
    if in_process:
        return None
    if before_launch is not None:
        before_launch()
    output.close()
    return run_plan(plan, worker, log_dir)


def dry_run_or_launch(
    plan: LaunchPlan,
    worker: Worker,
    log_dir: Path,
    output: Output,
    *,
    dry_run: bool,
    document: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    render: Callable[[Any, dict[str, Any]], None] | None = None,
    before_launch: Callable[[], None] | None = None,
) -> int | None:
    """``--dry-run``: :func:`show_dry_run`, 0; else :func:`launch_workers` (``None``: run in-process).

    Args:
        plan: From :meth:`LaunchArgs.plan`.
        worker: The module every rank runs, with its argv.
        log_dir: Where the rank logs go (also named in the dry-run commands).
        output: The command's output (``--json`` or human).
        dry_run: Print the plan and the exact command of every node; run nothing.
        document, render: The dry-run document and its human form, as :func:`show_dry_run` takes them.
        before_launch: As :func:`launch_workers` takes it.

    Returns:
        0 after a dry run, ``None`` when the command should run in-process, else the launch's exit code.
    """
    if dry_run:
        show_dry_run(plan, worker, log_dir, output, document=document, render=render)
        return 0
    return launch_workers(plan, worker, log_dir, output, before_launch=before_launch)


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
