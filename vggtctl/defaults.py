"""Defaults several layers share (the CLI, the services, the loader)."""

from __future__ import annotations

# The Hub repo the real weights come from, and what --model defaults to.
DEFAULT_REPO = "facebook/VGGT-1B"
