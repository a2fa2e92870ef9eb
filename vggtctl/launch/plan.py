"""The launch decision as a pure function: ``build_plan(request, detected, environ) -> LaunchPlan``.

Nothing here touches the machine: the hardware facts come in as :class:`Detected` (see
:mod:`vggtctl.launch.detect`), the environment as a mapping. That is what makes the rules table-testable:

- Already inside a launcher (``LOCAL_RANK`` set): run in-process, whatever else was asked.
- ``--launcher single``: in-process; ``torchrun``: ``python -m torch.distributed.run``; ``deepspeed``: the
  ``deepspeed`` runner with a hostfile (clusters that use one); ``auto``: in-process for one process on one
  node, torchrun otherwise. ``--deepspeed`` alone does not pick the deepspeed runner: the ZeRO config goes
  to the worker, which runs under torchrun (or in-process).
- Processes per node: the flag, else ``NPROC_PER_NODE``, else the visible GPUs (``CUDA_VISIBLE_DEVICES``
  honoured), else 1 on CPU.
- Nodes, node rank, master address and port: flags, else ``NNODES``/``NODE_RANK``/``MASTER_ADDR``/
  ``MASTER_PORT``, else SLURM's (``SLURM_NNODES``, ``SLURM_NODEID``, first host of ``SLURM_JOB_NODELIST``),
  else one node, rank 0, 127.0.0.1, 29500. Several nodes need a master address.
- One node under torchrun, no port given: torchrun picks the port itself when it binds (``--standalone``:
  a c10d rendezvous on ``localhost:0``), so two launches started together never race for one; the plan's
  ``master_port`` is then ``None``. Otherwise (a port given, several nodes, the deepspeed runner) the port
  is fixed in the plan: a busy *default* port on node 0 is replaced by a free one probed before the launch
  (with a warning); a busy port the user fixed is an error.
- The deepspeed runner on one node with no port given: the plan's port is ``port_movable``. Its rank 0
  binds the port seconds after the probe, so the runner holds it from before the start to the end (another
  launch cannot plan it too) and moves it when it is taken anyway (see :mod:`vggtctl.launch.port_hold`). A
  port the user gave is never moved, nor one of several nodes: the other nodes would still dial the old one.
- Environment added: ``OMP_NUM_THREADS`` (cores / processes) unless set, and the NCCL settings the config
  names (``NCCL_IB_DISABLE``, ``NCCL_SOCKET_IFNAME``, ...), passed through as given, never guessed.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vggtctl.errors import Problem, raise_problems
from vggtctl.runtime.zero import PRESETS as ZERO_PRESET_NAMES

LAUNCHERS = ("auto", "single", "torchrun", "deepspeed")
ZERO_PRESETS = ZERO_PRESET_NAMES  # the presets shipped in vggtctl/runtime/zero_presets/
DEFAULT_PORT = 29500
LOCALHOST = "127.0.0.1"
PORT_BY_TORCHRUN = "port: chosen by torchrun at start"


@dataclass(frozen=True)
class LaunchRequest:
    """What the user asked for (``None``: not given, so the environment or a default decides).

    Attributes:
        nproc_per_node: Processes on this node.
        nnodes: Number of nodes.
        node_rank: This node's rank.
        master_addr: Address of node 0's rendezvous.
        master_port: Its port.
        launcher: ``auto``, ``single``, ``torchrun`` or ``deepspeed``.
        deepspeed: ``zero2``, ``zero2-offload``, ``zero3``, ``zero3-offload`` or a path to a DeepSpeed JSON.
        device: The command's ``--device`` (``cpu`` keeps processes off the GPUs).
        nccl: NCCL variables from the config, added to the workers' environment as they are.
        hostfile: The hostfile for the ``deepspeed`` runner.
    """

    nproc_per_node: int | None = None
    nnodes: int | None = None
    node_rank: int | None = None
    master_addr: str | None = None
    master_port: int | None = None
    launcher: str = "auto"
    deepspeed: str | None = None
    device: str = "auto"
    nccl: Mapping[str, str] = field(default_factory=dict)
    hostfile: str | None = None


@dataclass(frozen=True)
class Detected:
    """Facts about this machine, gathered by :func:`vggtctl.launch.detect.detect`.

    Attributes:
        gpus: GPUs of the machine (NVML's count), or the ones torch sees when ``gpus_visible`` is True.
        gpus_visible: True when ``gpus`` already honours ``CUDA_VISIBLE_DEVICES`` (torch counted them).
        cpus: CPU cores this process may use.
        deepspeed: Whether the ``deepspeed`` package is importable.
        busy_ports: Ports found in use among the ones probed.
        spare_port: A port found free, used when the default one is busy and the plan must name a port
            (several nodes, the deepspeed runner).
    """

    gpus: int = 0
    gpus_visible: bool = False
    cpus: int = 1
    deepspeed: bool = False
    busy_ports: frozenset[int] = frozenset()
    spare_port: int | None = None


@dataclass(frozen=True)
class LaunchPlan:
    """How the command runs. ``backend`` is ``inprocess``, ``torchrun`` or ``deepspeed``.

    ``defaulted`` names the values nobody gave (``nproc_per_node``, ``master_port``, ...), ``source``
    says where each given value came from (``flag``, ``NNODES``, ``SLURM_NNODES``, ...). ``master_port`` is
    ``None`` when torchrun picks the port as it starts (one node, no port given): the workers still get
    ``MASTER_ADDR``/``MASTER_PORT`` from torchrun. ``port_movable``: nobody gave ``master_port`` and no other
    node dials it (one node, the deepspeed runner), so the runner may launch on another free port instead.
    """

    backend: str
    nproc_per_node: int
    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int | None
    rendezvous: str
    env: dict[str, str]
    defaulted: tuple[str, ...]
    source: dict[str, str]
    warnings: tuple[str, ...] = ()
    inside_launcher: bool = False
    deepspeed: str | None = None
    hostfile: str | None = None
    gpus_visible: int = 0
    port_movable: bool = False

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    def command(self, module: str, argv: Sequence[str], *, node_rank: int | None = None) -> list[str]:
        """The argv that starts ``python -m MODULE ARGV`` on every process of node ``node_rank``.

        In-process plans return ``[python, -m, MODULE, *ARGV]`` (what one process would run).
        """
        python = sys.executable or "python3"
        rank = self.node_rank if node_rank is None else node_rank
        if self.backend == "torchrun":
            head = [python, "-m", "torch.distributed.run", "--nproc-per-node", str(self.nproc_per_node)]
            head += ["--nnodes", str(self.nnodes), "--node-rank", str(rank)]
            if self.master_port is None:
                # torchrun's own local rendezvous: its store binds port 0 and the workers' MASTER_PORT is
                # that store's; --local-addr is the MASTER_ADDR the workers get.
                head += ["--standalone", "--local-addr", self.master_addr]
            else:
                head += ["--master-addr", self.master_addr, "--master-port", str(self.master_port)]
            # A failed worker fails the run: restarting it would repeat steps behind the checkpoints' back.
            head += ["--max-restarts", "0", "-m", module]
            return head + list(argv)
        if self.backend == "deepspeed":
            # The runner as a module of this interpreter: its `deepspeed` script is only on PATH in an
            # activated venv. `--no_local_rank`: the worker reads LOCAL_RANK from the environment, and the
            # runner would otherwise put `--local_rank=N` in front of the worker's own arguments.
            head = [python, "-m", "deepspeed.launcher.runner"]
            head += ["--num_gpus", str(self.nproc_per_node), "--num_nodes", str(self.nnodes)]
            if self.hostfile:
                head += ["--hostfile", self.hostfile]
            head += ["--master_addr", self.master_addr, "--master_port", str(self.master_port)]
            return head + ["--no_local_rank", "--module", module, *argv]
        return [python, "-m", module, *argv]

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "nproc_per_node": self.nproc_per_node,
            "nnodes": self.nnodes,
            "node_rank": self.node_rank,
            "world_size": self.world_size,
            "master_addr": self.master_addr,
            "master_port": self.master_port,
            "rendezvous": self.rendezvous,
            "env": dict(self.env),
            "defaulted": list(self.defaulted),
            "source": dict(self.source),
            "warnings": list(self.warnings),
            "inside_launcher": self.inside_launcher,
            "deepspeed": self.deepspeed,
            "hostfile": self.hostfile,
            "gpus_visible": self.gpus_visible,
            "port_movable": self.port_movable,
        }


def visible_gpus(detected: Detected, environ: Mapping[str, str]) -> int:
    """GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` applied to the machine's GPUs.

    As CUDA reads it: an empty value hides every GPU; the list stops at the first entry that names no GPU
    (``-1``, an index past the last GPU); ``GPU-``/``MIG-`` UUIDs count as GPUs.
    """
    if detected.gpus_visible or "CUDA_VISIBLE_DEVICES" not in environ:
        return detected.gpus
    count = 0
    for item in environ["CUDA_VISIBLE_DEVICES"].split(","):
        item = item.strip()
        if item.startswith(("GPU-", "MIG-")):
            count += 1
        elif item.isdigit() and int(item) < detected.gpus:
            count += 1
        else:
            break
    return min(count, detected.gpus) if detected.gpus else 0


def first_slurm_host(nodelist: str) -> str | None:
    """The first host of a SLURM node list: ``gpu[03-05,9],cpu1`` -> ``gpu03``; ``a,b`` -> ``a``."""
    nodelist = nodelist.strip()
    if not nodelist:
        return None
    m = re.match(r"^([^,\[]+)(?:\[([^\]]+)\])?", nodelist)
    if m is None:
        return None
    prefix, ranges = m.group(1), m.group(2)
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


def _env_int(environ: Mapping[str, str], name: str) -> int | None:
    raw = environ.get(name, "").strip()
    return int(raw) if raw.isdigit() else None


def _pick(
    name: str,
    flag: Any,
    environ: Mapping[str, str],
    env_names: Sequence[str],
    source: dict[str, str],
    *,
    as_int: bool = True,
) -> Any:
    """The flag, else the first environment variable that holds a usable value; records where it came from."""
    if flag is not None:
        source[name] = "flag"
        return flag
    for env_name in env_names:
        if as_int:
            value: Any = _env_int(environ, env_name)
        else:
            value = environ.get(env_name, "").strip() or None
        if value is not None:
            source[name] = env_name
            return value
    return None


def _slurm_master(environ: Mapping[str, str]) -> str | None:
    return first_slurm_host(environ.get("SLURM_JOB_NODELIST", "") or environ.get("SLURM_NODELIST", ""))


def _inside(environ: Mapping[str, str], detected: Detected, request: LaunchRequest) -> LaunchPlan:
    """Already a worker of torchrun / deepspeed / srun: run here, with the launcher's topology."""
    world = _env_int(environ, "WORLD_SIZE") or 1
    local_world = _env_int(environ, "LOCAL_WORLD_SIZE") or world
    return LaunchPlan(
        backend="inprocess",
        nproc_per_node=local_world,
        nnodes=max(1, world // max(local_world, 1)),
        node_rank=_env_int(environ, "GROUP_RANK") or 0,
        master_addr=environ.get("MASTER_ADDR", LOCALHOST),
        master_port=_env_int(environ, "MASTER_PORT") or DEFAULT_PORT,
        rendezvous="set by the enclosing launcher",
        env={},
        defaulted=(),
        source={"topology": "LOCAL_RANK/WORLD_SIZE"},
        inside_launcher=True,
        deepspeed=request.deepspeed,
        gpus_visible=visible_gpus(detected, environ),
    )


def build_plan(request: LaunchRequest, detected: Detected, environ: Mapping[str, str]) -> LaunchPlan:
    """Decide how to launch: pure, every input explicit.

    Args:
        request: What the user asked for.
        detected: Facts about the machine.
        environ: The environment (``os.environ`` in real use).

    Returns:
        The plan.

    Raises:
        ConfigError: Every problem found at once (exit 2): an unknown launcher or ZeRO preset, more processes
            than visible GPUs, DeepSpeed asked for but not installed, several nodes without a master address,
            a node rank out of range, a fixed port in use.
    """
    problems: list[Problem] = []
    if request.launcher not in LAUNCHERS:
        problems.append(Problem.of("launcher", f"must be one of {', '.join(LAUNCHERS)}", request.launcher))
    ds = request.deepspeed
    if ds is not None and ds not in ZERO_PRESETS and not ds.endswith(".json"):
        problems.append(
            Problem.of("deepspeed", f"must be one of {', '.join(ZERO_PRESETS)} or a .json file", ds)
        )
    if (ds is not None or request.launcher == "deepspeed") and not detected.deepspeed:
        problems.append(
            Problem.of(
                "deepspeed" if ds is not None else "launcher",
                "DeepSpeed is not installed (pip install 'vggtctl[train]')",
                ds if ds is not None else request.launcher,
            )
        )
    if request.hostfile and request.launcher != "deepspeed":
        problems.append(
            Problem.of(
                "hostfile",
                "is read only by the deepspeed runner (add --launcher deepspeed)",
                request.hostfile,
            )
        )
    if "LOCAL_RANK" in environ and environ["LOCAL_RANK"].strip().isdigit():
        raise_problems("launch options", problems)
        return _inside(environ, detected, request)

    source: dict[str, str] = {}
    defaulted: list[str] = []
    warnings: list[str] = []
    gpus = visible_gpus(detected, environ)
    on_gpu = request.device != "cpu" and gpus > 0

    nproc = _pick("nproc_per_node", request.nproc_per_node, environ, ("NPROC_PER_NODE",), source)
    if nproc is None:
        nproc = gpus if on_gpu else 1
        defaulted.append("nproc_per_node")
    nnodes = _pick(
        "nnodes", request.nnodes, environ, ("NNODES", "SLURM_NNODES", "SLURM_JOB_NUM_NODES"), source
    )
    if nnodes is None:
        nnodes = 1
        defaulted.append("nnodes")
    node_rank = _pick("node_rank", request.node_rank, environ, ("NODE_RANK", "SLURM_NODEID"), source)
    if node_rank is None:
        node_rank = 0
        defaulted.append("node_rank")
    addr = _pick("master_addr", request.master_addr, environ, ("MASTER_ADDR",), source, as_int=False)
    if addr is None and nnodes > 1:
        addr = _slurm_master(environ)
        if addr is not None:
            source["master_addr"] = "SLURM_JOB_NODELIST"
    port = _pick("master_port", request.master_port, environ, ("MASTER_PORT",), source)

    if nproc < 1:
        problems.append(Problem.of("nproc_per_node", "must be at least 1", nproc))
    if nnodes < 1:
        problems.append(Problem.of("nnodes", "must be at least 1", nnodes))
    if node_rank < 0 or node_rank >= max(nnodes, 1):
        problems.append(
            Problem.of("node_rank", f"must be in 0..{max(nnodes, 1) - 1} for {nnodes} node(s)", node_rank)
        )
    if on_gpu and nproc > gpus:
        problems.append(
            Problem.of(
                "nproc_per_node",
                f"asks for more processes than the {gpus} visible GPU(s) (CUDA_VISIBLE_DEVICES="
                f"{environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); use --device cpu for CPU processes",
                nproc,
            )
        )
    if nnodes > 1 and addr is None:
        problems.append(
            Problem.of("master_addr", f"is needed with {nnodes} nodes (node 0's address; or set MASTER_ADDR)")
        )
    if port is not None and not 1 <= port <= 65535:
        problems.append(Problem.of("master_port", "must be in 1..65535", port))
    # Only node 0 listens: a port seen busy elsewhere says nothing about node 0's.
    if port is not None and node_rank == 0 and port in detected.busy_ports:
        problems.append(
            Problem.of("master_port", "is in use on this machine; pick another or leave it unset", port)
        )

    launcher = request.launcher
    if launcher == "single" and nproc * nnodes > 1:
        problems.append(
            Problem.of(
                "launcher",
                f"'single' runs one process, but {nproc} process(es) x {nnodes} node(s) were asked for",
                launcher,
            )
        )
    raise_problems(
        "launch options", problems, "see `--help` for the launch options; `--dry-run` shows the plan"
    )

    in_process = launcher == "single" or (launcher == "auto" and nproc * nnodes == 1)
    if in_process:
        backend = "inprocess"
    elif launcher == "deepspeed":
        backend = "deepspeed"
    else:
        backend = "torchrun"

    if port is None:
        defaulted.append("master_port")
        # One torchrun node: the port stays None and torchrun binds port 0 itself, since a port probed free
        # here can be taken before torchrun binds it (two launches started at once).
        if backend != "torchrun" or nnodes > 1:
            port = DEFAULT_PORT
            # The deepspeed runner needs a real port: it has no port-0 rendezvous, it hands --master_port to
            # the workers as MASTER_PORT and rank 0 binds it. So does a static rendezvous of several nodes,
            # which every node must name. One process needs no rendezvous: a busy port is nobody's concern.
            busy = node_rank == 0 and port in detected.busy_ports and not in_process
            if busy and nnodes > 1:
                # the other nodes dial the default too: a port swapped here would leave them knocking at 29500
                raise_problems(
                    "launch options",
                    [
                        Problem.of(
                            "master_port",
                            f"{DEFAULT_PORT} (the default) is in use on node 0, and every node dials the same "
                            "port: give all nodes one free port",
                            port,
                        )
                    ],
                    "pass the same --master-port P (or MASTER_PORT=P) on every node",
                )
            if busy and detected.spare_port is not None:
                port = detected.spare_port
                warnings.append(f"port {DEFAULT_PORT} is in use; using free port {port} for the rendezvous")
    if addr is None:
        addr = LOCALHOST
        defaulted.append("master_addr")

    env: dict[str, str] = {}
    if backend != "inprocess" and "OMP_NUM_THREADS" not in environ:
        env["OMP_NUM_THREADS"] = str(max(1, detected.cpus // max(nproc, 1)))
    for key, value in request.nccl.items():
        env[str(key)] = str(value)

    if port is None:
        rendezvous = f"local ({addr}, {PORT_BY_TORCHRUN})"
    elif nnodes == 1:
        rendezvous = f"local ({addr}:{port})"
    else:
        rendezvous = f"static, node 0 at {addr}:{port}"
    return LaunchPlan(
        backend=backend,
        nproc_per_node=nproc,
        nnodes=nnodes,
        node_rank=node_rank,
        master_addr=addr,
        master_port=port,
        rendezvous=rendezvous if backend != "inprocess" else "none (one process)",
        env=env,
        defaulted=tuple(defaulted),
        source=source,
        warnings=tuple(warnings),
        deepspeed=ds,
        hostfile=request.hostfile,
        gpus_visible=gpus,
        port_movable=backend == "deepspeed" and nnodes == 1 and "master_port" in defaulted,
    )


__all__ = [
    "DEFAULT_PORT",
    "LAUNCHERS",
    "PORT_BY_TORCHRUN",
    "ZERO_PRESETS",
    "Detected",
    "LaunchPlan",
    "LaunchRequest",
    "build_plan",
    "first_slurm_host",
    "visible_gpus",
]
