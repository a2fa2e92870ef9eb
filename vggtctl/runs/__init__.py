"""The run directory: one layout every training command writes and every downstream command reads.

Typical use in a training loop (rank 0 writes; other ranks' calls do nothing)::

    run = RunDir.create("runs/lora-eth3d", config, {"model": provenance}, total_steps=1000)
    for step in range(1, 1001):
        ...
        run.log_metrics({"step": step, "loss": loss, "lr": lr, "step_time": dt, "data_time": wait})
    run.set_status("finished", step=1000)
"""

from vggtctl.runs.layout import checkpoint_name, is_run_dir, rank_log_name
from vggtctl.runs.logline import format_event_line, format_step_line
from vggtctl.runs.rundir import RunDir, RunStatus

__all__ = [
    "RunDir",
    "RunStatus",
    "checkpoint_name",
    "format_event_line",
    "format_step_line",
    "is_run_dir",
    "rank_log_name",
]
