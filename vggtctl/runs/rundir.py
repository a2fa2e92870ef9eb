"""Write and read a run directory (layout in :mod:`vggtctl.runs.layout`).

Writers are rank 0 only: on other ranks the writing methods do nothing, so training code can call them
unconditionally. ``status.json`` is rewritten atomically; ``metrics.jsonl`` is append-only, one line per
call, flushed at once so ``vggtctl monitor`` sees it. No torch import here.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from vggtctl.errors import InputError, UsageError
from vggtctl.runs import layout
from vggtctl.runtime.dist import dist_info
from vggtctl.runtime.versions import VERSIONED, versions
from vggtctl.utils.atomic import _json_default, atomic_write_json, atomic_write_text

# Run directories also record the training stack (the extras of vggtctl[train]).
_VERSIONED = VERSIONED + ("deepspeed",)


def utc_now_iso(when: float | None = None) -> str:
    """UTC time as ISO-8601 with seconds and an explicit offset (``2026-02-02T17:30:00+00:00``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() if when is None else when))


@dataclass
class RunStatus:
    """Contents of ``status.json``.

    Attributes:
        state: ``running``, ``finished`` or ``failed``.
        step: Last step the run reported.
        total_steps: Planned number of steps (None when unknown).
        started_at: When the run was created (UTC ISO-8601).
        updated_at: When this status was written (UTC ISO-8601).
        pid: Process id of the writer (rank 0).
        host: Host name of the writer, so readers know whether ``pid`` can be checked.
        message: Why the run failed, or any last word.
    """

    state: str
    step: int = 0
    total_steps: int | None = None
    started_at: str = ""
    updated_at: str = ""
    pid: int | None = None
    host: str | None = None
    message: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        extra = d.pop("extra")
        return {**d, **extra}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunStatus:
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        if "state" not in known:
            raise ValueError("status has no 'state'")
        return cls(**known, extra={k: v for k, v in d.items() if k not in names})


def _plain(value: Any, where: str = "config") -> Any:
    """Dataclasses, paths, enums and numpy scalars as plain YAML/JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _plain(getattr(value, f.name), f"{where}.{f.name}") for f in dataclasses.fields(value)
        }
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, enum.Enum):
        return _plain(value.value, where)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "tolist"):
        return value.tolist()
    raise UsageError(
        f"{where} is a {type(value).__name__}, which cannot be saved in the run directory",
        "pass plain values (numbers, strings, lists, dicts, dataclasses, paths)",
    )


class RunDir:
    """One run directory: paths, a rank-0 writer, and readers.

    Args:
        path: The run directory.
        rank: This process's rank; default from the launcher's environment (:func:`vggtctl.runtime.dist_info`:
            ``RANK``, else ``LOCAL_RANK``, else SLURM's, else 0). Only rank 0 writes.
    """

    def __init__(self, path: str | os.PathLike[str], *, rank: int | None = None) -> None:
        self.path = Path(path)
        self.rank = dist_info().rank if rank is None else rank
        self._metrics_file: IO[str] | None = None
        self._status: RunStatus | None = None

    # -- paths ---------------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / layout.CONFIG

    @property
    def meta_path(self) -> Path:
        return self.path / layout.META

    @property
    def metrics_path(self) -> Path:
        return self.path / layout.METRICS

    @property
    def status_path(self) -> Path:
        return self.path / layout.STATUS

    @property
    def logs_dir(self) -> Path:
        return self.path / layout.LOGS

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / layout.CHECKPOINTS

    @property
    def tb_dir(self) -> Path:
        return self.path / layout.TENSORBOARD

    @property
    def is_writer(self) -> bool:
        """True on rank 0, the only rank that writes run files."""
        return self.rank == 0

    def rank_log_path(self, rank: int | None = None) -> Path:
        """``logs/rank{N}.log`` for ``rank`` (default: this process's rank)."""
        return self.logs_dir / layout.rank_log_name(self.rank if rank is None else rank)

    def checkpoint_dir(self, step: int) -> Path:
        """``checkpoints/step_0000100`` for ``step`` (not created)."""
        return self.checkpoints_dir / layout.checkpoint_name(step)

    # -- writing -------------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        config: Any = None,
        meta: Mapping[str, Any] | None = None,
        *,
        total_steps: int | None = None,
        exist_ok: bool = False,
        rank: int | None = None,
    ) -> RunDir:
        """Create (or, with ``exist_ok``, resume) a run directory and mark it running.

        Every rank creates the folders (so each can open its ``logs/rank{N}.log``); only rank 0 writes
        ``config.yaml``, ``meta.json`` and ``status.json``. On resume ``started_at`` is kept.

        Args:
            path: Where the run lives.
            config: The resolved configuration (dataclass or mapping), saved as ``config.yaml``.
            meta: Extra facts for ``meta.json`` (e.g. ``{"model": provenance}``); versions, host and the
                command line are added.
            total_steps: Planned number of steps, when known.
            exist_ok: Allow an existing run directory (resume).
            rank: This process's rank (default: :func:`vggtctl.runtime.dist_info`).

        Returns:
            The run directory handle.

        Raises:
            UsageError: ``path`` is already a run directory and ``exist_ok`` is False, or a config value
                cannot be saved.
        """
        run = cls(path, rank=rank)
        previous = run.read_status() if run.status_path.exists() else None
        if previous is not None and not exist_ok and run.is_writer:
            raise UsageError(
                f"run directory already exists: {run.path}",
                "pick a new output directory, or resume the run in place",
            )
        for d in (run.path, run.logs_dir, run.checkpoints_dir, run.tb_dir):
            d.mkdir(parents=True, exist_ok=True)
        if not run.is_writer:
            return run
        if config is not None:
            atomic_write_text(run.config_path, yaml.safe_dump(_plain(config), sort_keys=False))
        facts: dict[str, Any] = {
            "created_at": utc_now_iso(),
            "host": socket.gethostname(),
            "argv": list(sys.argv),
            "versions": versions(_VERSIONED),
        }
        facts.update(_plain(dict(meta or {}), "meta"))
        atomic_write_json(run.meta_path, facts)
        now = utc_now_iso()
        run._status = RunStatus(
            state="running",
            step=previous.step if previous else 0,
            total_steps=total_steps
            if total_steps is not None
            else (previous.total_steps if previous else None),
            started_at=previous.started_at if previous and previous.started_at else now,
            updated_at=now,
            pid=os.getpid(),
            host=socket.gethostname(),
        )
        atomic_write_json(run.status_path, run._status.to_dict())
        return run

    def log_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Append one record to ``metrics.jsonl`` and flush (rank 0 only).

        Args:
            metrics: Must hold an integer ``step``. ``time`` (UNIX seconds) is added when absent. Keys
                ``vggtctl monitor`` understands: ``loss``, ``lr``, ``samples`` (cumulative samples seen),
                ``step_time`` and ``data_time`` (mean seconds per step since the previous record, total
                and waiting for data), ``batch_size``; any other value is kept as is. NaN and infinity
                are written as ``NaN``/``Infinity`` (Python's ``json`` reads them back).
        """
        if not self.is_writer:
            return
        step = metrics.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            raise ValueError(f"metrics need an integer 'step', got {step!r}")
        record = {"step": step, "time": time.time(), **metrics}
        line = json.dumps(_plain(record, "metrics"), default=_json_default) + "\n"
        if self._metrics_file is None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._metrics_file = open(self.metrics_path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
        # One write per record: a reader never sees half of two records interleaved.
        self._metrics_file.write(line)
        self._metrics_file.flush()

    def set_status(
        self,
        state: str | None = None,
        *,
        step: int | None = None,
        total_steps: int | None = None,
        message: str | None = None,
        **extra: Any,
    ) -> RunStatus | None:
        """Update ``status.json`` atomically (rank 0 only); unspecified fields keep their value.

        Args:
            state: ``running``, ``finished`` or ``failed``.
            step: Last finished step.
            total_steps: Planned number of steps.
            message: Why it failed, or a last word.
            **extra: More JSON-able fields to keep in the status.

        Returns:
            The status written, or None on ranks other than 0.
        """
        if not self.is_writer:
            return None
        if state is not None and state not in layout.STATES:
            raise ValueError(f"state must be one of {', '.join(layout.STATES)}, got {state!r}")
        clash = sorted(set(extra) & {f.name for f in dataclasses.fields(RunStatus)})
        if clash:
            raise ValueError(
                f"{', '.join(clash)} cannot be set through set_status (written by the run itself)"
            )
        current = self._status or self.read_status()
        if current is None:
            now = utc_now_iso()
            current = RunStatus(state="running", started_at=now, pid=os.getpid(), host=socket.gethostname())
        updated = dataclasses.replace(
            current,
            state=state or current.state,
            step=current.step if step is None else step,
            total_steps=current.total_steps if total_steps is None else total_steps,
            message=current.message if message is None else message,
            updated_at=utc_now_iso(),
            extra={**current.extra, **_plain(extra, "status")},
        )
        atomic_write_json(self.status_path, updated.to_dict())
        self._status = updated
        return updated

    def open_rank_log(self) -> IO[str]:
        """This rank's ``logs/rank{N}.log``, opened for appending with line buffering."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        return open(self.rank_log_path(), "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - caller closes

    def close(self) -> None:
        """Close the metrics file (records are already flushed)."""
        if self._metrics_file is not None:
            self._metrics_file.close()
            self._metrics_file = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> RunDir:
        """An existing run directory, for reading.

        Raises:
            InputError: ``path`` is missing or is not a run directory.
        """
        p = Path(path)
        if not p.exists():
            raise InputError(
                f"run directory not found: {p}", "check the path; runs are where --output pointed"
            )
        if not layout.is_run_dir(p):
            raise InputError(
                f"not a vggtctl run directory (no {layout.STATUS}, {layout.METRICS} or {layout.LOGS}/): {p}",
                "point at the directory a training command created",
            )
        return cls(p, rank=0)

    def read_status(self) -> RunStatus | None:
        """``status.json``, or None when there is none yet.

        Raises:
            InputError: The file exists but is not a status object.
        """
        try:
            raw = self.status_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return RunStatus.from_dict(json.loads(raw))
        except (ValueError, TypeError, AttributeError) as e:
            raise InputError(
                f"{self.status_path} is not a valid status file ({e})",
                "it is rewritten on the next status update",
            ) from None

    def read_config(self) -> dict[str, Any]:
        """``config.yaml`` as a dict (empty when absent)."""
        if not self.config_path.exists():
            return {}
        return yaml.safe_load(self.config_path.read_text(encoding="utf-8")) or {}

    def read_meta(self) -> dict[str, Any]:
        """``meta.json`` as a dict (empty when absent)."""
        if not self.meta_path.exists():
            return {}
        return json.loads(self.meta_path.read_text(encoding="utf-8"))

    def iter_metrics(self) -> Iterator[dict[str, Any]]:
        """Records of ``metrics.jsonl`` in order; lines that are not a JSON object (a record being
        written, a torn line after a crash) are skipped."""
        try:
            f = open(self.metrics_path, encoding="utf-8")  # noqa: SIM115 - closed by with below
        except FileNotFoundError:
            return
        with f:
            for line in f:
                if not line.endswith("\n"):
                    return
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    yield record

    def rank_logs(self) -> dict[int, Path]:
        """``{rank: path}`` of the ``logs/rank{N}.log`` files present."""
        if not self.logs_dir.is_dir():
            return {}
        found = {}
        for p in self.logs_dir.iterdir():
            rank = layout.rank_from_log_name(p.name)
            if rank is not None and p.is_file():
                found[rank] = p
        return dict(sorted(found.items()))

    def checkpoints(self) -> list[tuple[int, Path]]:
        """``[(step, path)]`` of the checkpoint directories, by step."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = []
        for p in self.checkpoints_dir.iterdir():
            step = layout.step_from_checkpoint_name(p.name)
            if step is not None and p.is_dir():
                found.append((step, p))
        return sorted(found)
