"""Where vggtctl keeps things: ``VGGTCTL_HOME`` or the XDG cache, never /tmp."""

from __future__ import annotations

import os
from pathlib import Path


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
