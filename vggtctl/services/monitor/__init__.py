"""Training monitor: read a run directory or a training log and say whether it is running, how fast,
when it will finish, whether the loss is sane and whether the GPU is starved.

Modules: ``parse`` (log lines → events), ``run_state`` (events → bounded running state, the ``Tracker``),
``summary`` (state → report, stall verdict with an injected clock), ``reader``/``follow`` (tail-first reads,
following across rotation), ``plot``, ``tensorboard``, ``service`` (what the CLI calls). GPU figures come from
:mod:`vggtctl.runtime.gpu` (NVML).
"""

from vggtctl.services.monitor.service import (
    STOPPED_STATES,
    FollowResult,
    MonitorRequest,
    MonitorSession,
    follow,
    summarize,
)
from vggtctl.services.monitor.summary import MonitorSummary

__all__ = [
    "STOPPED_STATES",
    "FollowResult",
    "MonitorRequest",
    "MonitorSession",
    "MonitorSummary",
    "follow",
    "summarize",
]
