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
class GpuInfo:
    """One visible GPU."""

    index: int
    name: str
    memory_total_mb: int | None = None
    compute_capability: str | None = None


@dataclass
class EnvReport:
    """Everything ``vggtctl env`` shows."""

    vggtctl: str
    python: str
    platform: str
    packages: dict[str, str]
    cuda: dict[str, Any]
    gpus: list[GpuInfo] = field(default_factory=list)
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
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                report.gpus.append(
                    GpuInfo(i, props.name, int(props.total_memory // 2**20), f"{props.major}.{props.minor}")
                )
    except Exception as e:  # noqa: BLE001
        cuda["error"] = f"{type(e).__name__}: {e}"
    report.cuda = cuda


def _nvml_facts(report: EnvReport) -> None:
    """Driver version (and GPUs when torch has no CUDA) from NVML, if the library and a driver exist."""
    try:
        import pynvml
    except Exception:  # noqa: BLE001
        return
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no NVIDIA driver: nothing to add
        return
    try:
        drv = pynvml.nvmlSystemGetDriverVersion()
        report.cuda["driver"] = drv.decode() if isinstance(drv, bytes) else str(drv)
        if not report.gpus:
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = pynvml.nvmlDeviceGetName(h)
                mem = pynvml.nvmlDeviceGetMemoryInfo(h)
                report.gpus.append(
                    GpuInfo(
                        i, name.decode() if isinstance(name, bytes) else str(name), int(mem.total // 2**20)
                    )
                )
            if report.gpus and not report.cuda.get("available"):
                report.notes.append(
                    "NVIDIA GPUs are present but torch cannot use them: install a CUDA build of torch"
                )
    except Exception as e:  # noqa: BLE001
        report.notes.append(f"NVML query failed: {type(e).__name__}: {e}")
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


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
    report.paths = {
        "vggtctl_home": str(vggtctl_home()),
        "hf_hub_cache": str(hf_hub_cache()),
        "eth3d": str(eth3d_dir()),
    }
    report.cached_weights = cached_weights()
    report.env = env_vars()
    return report
