"""Process-wide CLI flags set by the root callback (``--debug``, ``--quiet``)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class CliState:
    debug: bool = False
    quiet: bool = False


state = CliState(debug=os.environ.get("VGGTCTL_DEBUG", "") not in ("", "0", "false"))
