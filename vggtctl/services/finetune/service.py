"""Prepare a fine-tuning run and launch it: what ``vggtctl finetune`` calls.

The run directory is decided here (``--resume auto`` continues from its newest complete checkpoint,
``never`` refuses an existing run, a path names a checkpoint), the resolved config is written to
``RUN/config.yaml`` for every rank to read, and the launcher runs :mod:`.worker` (in this process for one
process, where errors reach the CLI as ``VggtctlError``; else under torchrun).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vggtctl.errors import Problem, UsageError
from vggtctl.runs import layout
from vggtctl.services.finetune.config import FinetuneConfig, config_dict, raise_problems
from vggtctl.utils.atomic import atomic_write_text

WORKER = "vggtctl.services.finetune.worker"


@dataclass(frozen=True)
class PreparedRun:
    run_dir: Path
    resume_from: Path | None

    def worker_argv(self) -> list[str]:
        argv = ["--run-dir", str(self.run_dir)]
        if self.resume_from is not None:
            argv += ["--resume", str(self.resume_from)]
        return argv


def resolve_resume(run_dir: Path, resume: str) -> Path | None:
    """The checkpoint to continue from for ``resume`` = ``auto``, ``never`` or a checkpoint path.

    Raises:
        UsageError: ``never`` with an existing run, or a path that is not a complete checkpoint (exit 2).
    """
    from vggtctl.services.finetune.checkpoints import MANIFEST, latest_checkpoint

    if resume == "auto":
        return latest_checkpoint(run_dir / layout.CHECKPOINTS)
    if resume == "never":
        if layout.is_run_dir(run_dir):
            raise UsageError(
                f"run directory already exists: {run_dir}",
                "pick a new --output-dir, or continue it with --resume auto",
            )
        return None
    path = Path(resume)
    if not (path / MANIFEST).is_file():
        raise_problems(
            "finetune options", [Problem.of("resume", "is not a complete checkpoint folder", resume)]
        )
    return path


def prepare(cfg: FinetuneConfig, resume: str) -> PreparedRun:
    """Check the data, decide the resume point, and write the resolved config (rank 0 of the launch)."""
    from vggtctl.services.finetune.data import scene_dirs

    scene_dirs(cfg.data)  # bad data is a config error now, not in every rank later
    run_dir = Path(cfg.output_dir)
    resume_from = resolve_resume(run_dir, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / layout.CONFIG, yaml.safe_dump(config_dict(cfg), sort_keys=False))
    return PreparedRun(run_dir, resume_from)


def run_prepared(prepared: PreparedRun, plan: Any) -> int:
    """Run the worker as ``plan`` says; returns its exit code (in-process errors are raised)."""
    from vggtctl.launch import Worker, run_plan

    if plan.backend == "inprocess":
        from vggtctl.services.finetune.worker import train

        return train(prepared.run_dir, prepared.resume_from)
    return run_plan(plan, Worker(WORKER, prepared.worker_argv()), prepared.run_dir / layout.LOGS)


def check_resume_value(resume: str) -> None:
    if resume not in ("auto", "never") and not Path(resume).exists():
        raise_problems(
            "finetune options", [Problem.of("resume", "must be auto, never or a checkpoint folder", resume)]
        )
