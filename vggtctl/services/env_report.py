"""What ``vggtctl env`` reports: versions, GPUs, cache paths and the environment variables that matter.

Nothing here may crash on a missing or broken package: versions come from package metadata (no import),
and the torch/NVML probes catch everything and report what went wrong instead.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from vggtctl import __version__
from vggtctl.paths import eth3d_dir, hf_hub_cache, vggtctl_home
from vggtctl.runtime.dist import dist_info
from vggtctl.runtime.gpu import GpuInfo, NvmlSession, torch_gpus
from vggtctl.runtime.precision import cpu_auto_dtype, cpu_bf16_support

NOT_INSTALLED = "not installed"
# (label, distribution names to try in order)
PACKAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("torch", ("torch",)),
    ("numpy", ("numpy",)),
    ("huggingface_hub", ("huggingface_hub", "huggingface-hub")),
    ("safetensors", ("safetensors",)),
    ("typer", ("typer",)),
    ("deepspeed", ("deepspeed",)),
    ("peft", ("peft",)),
    ("transformers", ("transformers",)),
    ("opencv", ("opencv-python-headless", "opencv-python", "opencv-contrib-python")),
    ("pillow", ("pillow", "Pillow")),
    ("nvidia-ml-py", ("nvidia-ml-py", "pynvml")),
)
ENV_VARS: tuple[str, ...] = (
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_TOKEN",
    "HF_HUB_OFFLINE",
    "HF_ENDPOINT",
    "HF_HUB_ENABLE_HF_TRANSFER",
    "HF_HUB_DISABLE_XET",
    "TRANSFORMERS_OFFLINE",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_HOME",
    "PYTORCH_CUDA_ALLOC_CONF",
    "NCCL_DEBUG",
    "NCCL_SOCKET_IFNAME",
    "OMP_NUM_THREADS",
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "NNODES",
    "NODE_RANK",
    "NPROC_PER_NODE",
    "SLURM_JOB_ID",
    "VGGTCTL_HOME",
    "VGGTCTL_DEBUG",
    "XDG_CACHE_HOME",
    "NO_COLOR",
)
_SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "KEY")


@dataclass
class EnvReport:
    """Everything ``vggtctl env`` shows."""

    vggtctl: str
    python: str
    platform: str
    packages: dict[str, str]
    cuda: dict[str, Any]
    cpu: dict[str, Any] = field(default_factory=dict)
    gpus: list[GpuInfo] = field(default_factory=list)
    dist: dict[str, int] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    cached_weights: list[str] = field(default_factory=list)
    env: dict[str, str | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return asdict(self)


def package_version(*dists: str) -> str:
    """Installed version of the first distribution found, or ``"not installed"`` (never imports it)."""
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        except Exception as e:  # noqa: BLE001 - broken metadata must not crash `vggtctl env`
            return f"unknown ({type(e).__name__})"
    return NOT_INSTALLED


def _is_secret(name: str) -> bool:
    return any(w in name.upper() for w in _SECRET_WORDS)


def env_vars(names: tuple[str, ...] = ENV_VARS) -> dict[str, str | None]:
    """Values of the relevant variables (``None`` when unset); secrets appear only as ``"set"``."""
    out: dict[str, str | None] = {}
    for name in names:
        value = os.environ.get(name)
        if value is not None and _is_secret(name):
            value = "set"
        out[name] = value
    return out


def _torch_facts(report: EnvReport) -> None:
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - a broken torch install is exactly what `env` must show
        report.cuda = {"available": False, "error": f"import torch failed: {type(e).__name__}: {e}"}
        return
    cuda: dict[str, Any] = {"available": False, "torch_cuda": torch.version.cuda, "cudnn": None, "nccl": None}
    try:
        cuda["available"] = bool(torch.cuda.is_available())
        if torch.backends.cudnn.is_available():
            cuda["cudnn"] = str(torch.backends.cudnn.version())
        if torch.distributed.is_available() and hasattr(torch.cuda, "nccl") and torch.version.cuda:
            try:
                v = torch.cuda.nccl.version()
                cuda["nccl"] = ".".join(str(x) for x in v) if isinstance(v, tuple) else str(v)
            except Exception:  # noqa: BLE001 - NCCL missing in this build
                cuda["nccl"] = None
        if cuda["available"]:
            cuda["device_count"] = torch.cuda.device_count()
            report.gpus.extend(torch_gpus())
    except Exception as e:  # noqa: BLE001
        cuda["error"] = f"{type(e).__name__}: {e}"
    report.cuda = cuda


def _nvml_facts(report: EnvReport) -> None:
    """Driver version (and GPUs when torch has no CUDA) from NVML, if the library and a driver exist."""
    with NvmlSession() as nvml:
        nv = nvml.query()
    if nv.driver:
        report.cuda["driver"] = nv.driver
    if not report.gpus and nv.gpus:
        report.gpus.extend(nv.gpus)
        if not report.cuda.get("available"):
            report.notes.append(
                "NVIDIA GPUs are present but torch cannot use them: install a CUDA build of torch"
            )
    elif nv.note and nv.note.startswith("NVML query failed"):
        report.notes.append(nv.note)


def _cpu_facts(report: EnvReport) -> None:
    """The CPU's bf16 support from its flags (no probe: `env` answers at once) and what ``--dtype auto`` picks."""
    support = cpu_bf16_support()
    report.cpu = {
        "model": _cpu_model(),
        "count": os.cpu_count(),
        "bf16": support.describe(),
        "bf16_native": support.native,
        "bf16_flags": list(support.flags),
        "auto_dtype": cpu_auto_dtype(set(support.flags))
        if support.native is not None
        else "probed at run time",
    }
    try:
        import torch

        report.cpu["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        report.cpu["torch_threads"] = torch.get_num_threads()
    except Exception as e:  # noqa: BLE001 - a broken torch is reported under cuda already
        report.cpu["torch_cpu_capability"] = f"unknown ({type(e).__name__})"


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.startswith("model name") or line.startswith("Model"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cached_weights() -> list[str]:
    """VGGT weights already local: Hub cache snapshots holding model.safetensors/.pt, and the tiny checkpoint."""
    found: list[str] = []
    hub = hf_hub_cache()
    try:
        repos = sorted(hub.glob("models--*")) if hub.is_dir() else []
    except OSError:
        repos = []
    for repo_dir in repos:
        repo = repo_dir.name[len("models--") :].replace("--", "/")
        for snap in sorted((repo_dir / "snapshots").glob("*")):
            for name in ("model.safetensors", "model.pt"):
                if (snap / name).exists():
                    found.append(f"{repo}@{snap.name[:12]}/{name}")
    tiny = vggtctl_home() / "weights" / "tiny" / "model.safetensors"
    if tiny.is_file():
        found.append(f"tiny: {tiny}")
    return found


def collect_env() -> EnvReport:
    """Gather the environment report; never raises for missing or broken packages."""
    report = EnvReport(
        vggtctl=__version__,
        python=f"{platform.python_version()} ({sys.executable})",
        platform=platform.platform(),
        packages={label: package_version(*dists) for label, dists in PACKAGES},
        cuda={},
    )
    _torch_facts(report)
    _nvml_facts(report)
    _cpu_facts(report)
    d = dist_info()
    report.dist = {"rank": d.rank, "local_rank": d.local_rank, "world_size": d.world_size}
    report.paths = {
        "vggtctl_home": str(vggtctl_home()),
        "hf_hub_cache": str(hf_hub_cache()),
        "eth3d": str(eth3d_dir()),
    }
    report.cached_weights = cached_weights()
    report.env = env_vars()
    return report
