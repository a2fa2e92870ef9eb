"""Options shared by several commands, defined once (``Annotated`` aliases, as huggingface_hub's CLI).

Every command spells, documents and validates ``--json``, ``--model``, ``--revision``, ``--preset``,
``--device``, ``--dtype`` and ``--scenes`` the same way. Nothing here imports torch.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from vggtctl.runtime.precision import DTYPE_HELP
from vggtctl.utils.devices import device_problem, normalize_device


class Mode(str, Enum):
    """Preprocessing: ``crop`` = width to the model size, centre-crop; ``pad`` = white square."""

    crop = "crop"
    pad = "pad"


class Dtype(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Points(str, Enum):
    """Where the point cloud comes from: depth + cameras (more accurate) or the point head."""

    depth = "depth"
    head = "head"


def _device(value: str) -> str:
    problem = device_problem(value)
    if problem is not None:
        raise typer.BadParameter(f"{value!r} is {problem}")
    return normalize_device(value)


def _preset(value: str | None) -> str | None:
    if value is None:
        return None
    from vggtctl.models.vggt.config import PRESETS  # no torch: the presets are plain dataclasses

    if value not in PRESETS:
        raise typer.BadParameter(f"unknown preset {value!r} (known: {', '.join(sorted(PRESETS))})")
    return value


def split_list(values: list[str] | None) -> list[str]:
    """``--x a,b --x c`` -> ``[a, b, c]`` (the one form of every list option)."""
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Hub repo id, local .safetensors/.pt file or folder, or 'tiny' (the seeded test model).",
    ),
]
RevisionOption = Annotated[
    str | None, typer.Option("--revision", help="Hub branch, tag or commit to pin (Hub models only).")
]
PresetOption = Annotated[
    str | None,
    typer.Option(
        "--preset", callback=_preset, help="Model preset (vggt-1b, tiny); inferred from the checkpoint."
    ),
]
DeviceOption = Annotated[
    str,
    typer.Option(
        "--device", callback=_device, help="auto (cuda if available, else cpu), cpu, cuda or cuda:N."
    ),
]
DtypeOption = Annotated[
    Dtype,
    typer.Option("--dtype", help=DTYPE_HELP),
]
ScenesOption = Annotated[
    list[str] | None,
    typer.Option("--scenes", help="Scene names, comma-separated or repeated (--scenes a,b --scenes c)."),
]


class Launcher(str, Enum):
    """How the processes start: ``auto`` (one process in-process, several under torchrun), or forced."""

    auto = "auto"
    single = "single"
    torchrun = "torchrun"
    deepspeed = "deepspeed"


_LAUNCH = "Launch (one GPU to many nodes; see docs/launch.md)"

NprocOption = Annotated[
    int | None,
    typer.Option(
        "--nproc-per-node",
        "--nproc_per_node",
        min=1,
        rich_help_panel=_LAUNCH,
        help="Processes on this node (default: NPROC_PER_NODE, else the visible GPUs, else 1 on CPU).",
    ),
]
NnodesOption = Annotated[
    int | None,
    typer.Option(
        "--nnodes", min=1, rich_help_panel=_LAUNCH, help="Nodes (default: NNODES, SLURM_NNODES, else 1)."
    ),
]
NodeRankOption = Annotated[
    int | None,
    typer.Option(
        "--node-rank",
        "--node_rank",
        min=0,
        rich_help_panel=_LAUNCH,
        help="This node's rank (default: NODE_RANK, SLURM_NODEID, else 0).",
    ),
]
MasterAddrOption = Annotated[
    str | None,
    typer.Option(
        "--master-addr",
        "--master_addr",
        rich_help_panel=_LAUNCH,
        help="Node 0's address (default: MASTER_ADDR, SLURM's first node; needed with several nodes).",
    ),
]
MasterPortOption = Annotated[
    int | None,
    typer.Option(
        "--master-port",
        "--master_port",
        min=1,
        max=65535,
        rich_help_panel=_LAUNCH,
        help=(
            "Rendezvous port (default: MASTER_PORT, else torchrun picks one as it starts on one node; "
            "29500 for several nodes or --launcher deepspeed, or a free one when 29500 is busy)."
        ),
    ),
]
LauncherOption = Annotated[
    Launcher,
    typer.Option(
        "--launcher", rich_help_panel=_LAUNCH, help="auto, single, torchrun or deepspeed (hostfile)."
    ),
]
HostfileOption = Annotated[
    str | None,
    typer.Option(
        "--hostfile",
        rich_help_panel=_LAUNCH,
        help="DeepSpeed hostfile ('host slots=N' per line) for --launcher deepspeed on clusters that use one.",
    ),
]
DeepspeedOption = Annotated[
    str | None,
    typer.Option(
        "--deepspeed",
        rich_help_panel=_LAUNCH,
        help="DeepSpeed ZeRO: zero2, zero2-offload, zero3, zero3-offload, or a DeepSpeed JSON file.",
    ),
]
DryRunOption = Annotated[
    bool,
    typer.Option(
        "--dry-run", rich_help_panel=_LAUNCH, help="Print the launch plan and commands; run nothing."
    ),
]
HostOption = Annotated[
    str,
    typer.Option(
        "--host", help="Address to listen on: 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)."
    ),
]
PortOption = Annotated[
    int, typer.Option("--port", min=0, max=65535, help="Port to listen on (0: any free port).")
]
