"""Where vggtctl keeps things: ``VGGTCTL_HOME`` or the XDG cache, never /tmp."""

from __future__ import annotations

import os
from pathlib import Path

from vggtctl.errors import Problem, UsageError


def vggtctl_home() -> Path:
    """Root of vggtctl's own cache (datasets, manifests). ``VGGTCTL_HOME`` wins, then XDG."""
    env = os.environ.get("VGGTCTL_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "vggtctl"


def datasets_dir() -> Path:
    return vggtctl_home() / "datasets"


def eth3d_dir() -> Path:
    return datasets_dir() / "eth3d"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache as huggingface_hub resolves it (HF_HUB_CACHE, then HF_HOME/hub)."""
    env = os.environ.get("HF_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    home = os.environ.get("HF_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".cache" / "huggingface"
    return base / "hub"


def gt_depth_cache_dir() -> Path:
    """Ground-truth depth on the model grid, cached by the data layer (safe to delete)."""
    return vggtctl_home() / "cache" / "gt_depth"


# ---------------------------------------------------------------- output paths, checked before any work


def _blocking_parent(path: Path) -> Path | None:
    """The first existing ancestor of ``path`` that is not a folder (nothing can be created below it)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _dir_reason(path: Path) -> str | None:
    if path.exists() and not path.is_dir():
        return "an existing file, not a folder"
    blocker = _blocking_parent(path)
    return f"cannot be created: {blocker} is a file" if blocker is not None else None


def output_dir_problem(field: str, path: Path) -> Problem | None:
    """Why ``path`` (the value of ``field``) cannot be or become an output folder; None when it can."""
    reason = _dir_reason(Path(path).expanduser())
    return Problem.of(field, reason, str(path)) if reason else None


def output_file_problem(
    field: str, path: Path, overwrite: bool = True, overwrite_field: str = "overwrite"
) -> Problem | None:
    """Why ``path`` (the value of ``field``) cannot be written as an output file; None when it can.

    Args:
        field: The config field holding the path.
        path: The file to write.
        overwrite: Whether an existing file may be replaced.
        overwrite_field: The field that allows replacing it, named in the problem.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        return Problem.of(field, "a folder; give a file name", str(path))
    if p.exists() and not overwrite:
        return Problem.of(
            field,
            "exists already; set {" + overwrite_field + "} to replace it",
            str(path),
            refs=[overwrite_field],
        )
    blocker = _blocking_parent(p)
    if blocker is not None:
        return Problem.of(field, f"cannot be created: {blocker} is a file", str(path))
    return None


def home_problem() -> str | None:
    """Why ``VGGTCTL_HOME`` (or the XDG cache) cannot hold vggtctl's cache, or None when it can."""
    reason = _dir_reason(vggtctl_home())
    if reason is None:
        return None
    source = "VGGTCTL_HOME" if os.environ.get("VGGTCTL_HOME") else "the vggtctl cache folder"
    return f"{source} {vggtctl_home()}: {reason}"


def check_home() -> None:
    """Raise a UsageError when vggtctl's cache folder cannot be used (before any download starts)."""
    problem = home_problem()
    if problem is not None:
        raise UsageError(problem, "point VGGTCTL_HOME at a folder (or unset it), or pass --out DIR")
