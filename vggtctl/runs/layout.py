"""The names inside a vggtctl run directory: one layout that every writer and reader shares.

```
RUN/
  config.yaml              resolved configuration (yaml.safe_dump)
  meta.json                versions, host, command line, model provenance
  metrics.jsonl            one JSON object per logged step, append-only (rank 0)
  status.json              state, step, total_steps, started_at, updated_at, pid (atomic rewrite)
  logs/rank{N}.log         what rank N printed
  checkpoints/step_0000100/
  tb/                      TensorBoard event files
```
"""

from __future__ import annotations

import re
from pathlib import Path

CONFIG = "config.yaml"
META = "meta.json"
METRICS = "metrics.jsonl"
STATUS = "status.json"
LOGS = "logs"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tb"

STATES = ("running", "finished", "failed")
"""Values of ``status.json``'s ``state``."""

_RANK_LOG = re.compile(r"^rank(\d+)\.log$")
_CHECKPOINT = re.compile(r"^step_(\d+)$")


def rank_log_name(rank: int) -> str:
    """File name of rank ``rank``'s log inside ``logs/`` (``rank0.log``)."""
    if rank < 0:
        raise ValueError(f"rank must be >= 0, got {rank}")
    return f"rank{rank}.log"


def rank_from_log_name(name: str) -> int | None:
    """The rank a ``logs/`` file belongs to (``rank3.log`` → 3), or None for other files."""
    m = _RANK_LOG.match(name)
    return int(m.group(1)) if m else None


def checkpoint_name(step: int) -> str:
    """Directory name of the checkpoint taken at ``step``: zero-padded so names sort by step."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return f"step_{step:07d}"


def step_from_checkpoint_name(name: str) -> int | None:
    """The step of a ``checkpoints/`` entry (``step_0000100`` → 100), or None for other names."""
    m = _CHECKPOINT.match(name)
    return int(m.group(1)) if m else None


def is_run_dir(path: Path) -> bool:
    """True when ``path`` looks like a run directory (it holds status.json, metrics.jsonl or logs/)."""
    return path.is_dir() and any((path / name).exists() for name in (STATUS, METRICS, LOGS))
