"""vggtctl's own one-line step record for rank logs, readable by people, ``grep`` and ``vggtctl monitor``.

``2026-02-02T17:30:00.123Z step 150/28710 loss=0.9123 lr=2e-05 step_time=18.5 data_time=0.12``

The time is UTC; keys are the ``metrics.jsonl`` keys so both files say the same thing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

_SKIP = frozenset({"step", "time", "total_steps"})


def format_timestamp(when: float) -> str:
    """UTC ISO-8601 with milliseconds and a ``Z`` (``2026-02-02T17:30:00.123Z``)."""
    whole = math.floor(when)
    millis = int(round((when - whole) * 1000))
    if millis == 1000:
        whole, millis = whole + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def _format_value(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value).replace(" ", "_")
    if isinstance(value, int):
        return str(value)
    return f"{value:.6g}"


def format_step_line(
    step: int,
    total_steps: int | None = None,
    metrics: Mapping[str, object] | None = None,
    when: float | None = None,
) -> str:
    """One step record, without the trailing newline.

    Args:
        step: Optimizer step just finished.
        total_steps: Planned number of steps, when known.
        metrics: Values to show as ``key=value`` (``loss``, ``lr``, ``step_time``, ``data_time``, ``samples``...).
        when: UNIX time of the record (default: now).

    Returns:
        The line, e.g. ``2026-02-02T17:30:00.123Z step 150/28710 loss=0.9123``.
    """
    head = f"{format_timestamp(time.time() if when is None else when)} step {step}"
    if total_steps:
        head += f"/{total_steps}"
    pairs = [f"{k}={_format_value(v)}" for k, v in (metrics or {}).items() if k not in _SKIP]
    return " ".join([head, *pairs])


def format_event_line(event: str, values: Mapping[str, object], when: float | None = None) -> str:
    """A one-off record that is not a step (``2026-02-02T17:30:00.123Z export groups=3 kept_bytes=0``)."""
    pairs = [f"{k}={_format_value(v)}" for k, v in values.items()]
    return " ".join([format_timestamp(time.time() if when is None else when), event, *pairs])
