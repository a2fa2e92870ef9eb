"""Execute a :class:`~vggtctl.launch.plan.LaunchPlan`: in this process, or torchrun / deepspeed as a child.

- argv lists, never a shell;
- each worker's output in ``logs/rank{N}.log`` (through :mod:`vggtctl.launch.entry`);
- SIGINT and SIGTERM sent to this process are forwarded to the launcher, which forwards them to every
  worker (the child runs in its own session, so a terminal's Ctrl-C reaches it once, through us);
- the exit code is the workers' own: the earliest non-zero code a worker recorded, else the code of a
  worker killed by signal N as 128+N (read from torchrun's failure report), else the launcher's.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vggtctl.launch.plan import LaunchPlan

ENTRY_MODULE = "vggtctl.launch.entry"
# Not imported here: every rank runs it with `python -m`, and a package that had imported it already makes
# runpy warn in every worker ('found in sys.modules ... unpredictable behaviour').
EXITCODE_SUFFIX = ".exitcode"  # vggtctl.launch.entry writes rank{N}.exitcode
_FORWARDED = (signal.SIGINT, signal.SIGTERM)
# torchrun's failure summary: "  exitcode  : -9 (pid: 1234)"
_EXITCODE_LINE = re.compile(rb"exitcode\s*:\s*(-?\d+)")


@dataclass(frozen=True)
class Worker:
    """A command's worker entry point: ``MODULE.main(ARGV) -> int`` runs on every rank.

    Attributes:
        module: Importable module path (``vggtctl.services.finetune.worker``) with ``main(argv) -> int``.
        argv: Its arguments (plain strings; they travel through torchrun's command line).
    """

    module: str
    argv: Sequence[str] = field(default_factory=tuple)


def worker_command(
    plan: LaunchPlan, worker: Worker, log_dir: Path, *, node_rank: int | None = None
) -> list[str]:
    """The argv the launcher runs on node ``node_rank`` for ``worker`` (what ``--dry-run`` prints)."""
    inner = ["--log-dir", str(log_dir), worker.module, *worker.argv]
    return plan.command(ENTRY_MODULE, inner, node_rank=node_rank)


@contextlib.contextmanager
def _environ(extra: Mapping[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _pump_stderr(src: IO[bytes], seen: list[int]) -> None:
    for line in iter(src.readline, b""):
        m = _EXITCODE_LINE.search(line)
        if m:
            seen.append(int(m.group(1)))
        with contextlib.suppress(Exception):
            sys.stderr.buffer.write(line) if hasattr(sys.stderr, "buffer") else sys.stderr.write(
                line.decode(errors="replace")
            )
            sys.stderr.flush()
    src.close()


def _recorded_codes(log_dir: Path) -> list[tuple[float, int]]:
    found = []
    for p in log_dir.glob(f"rank*{EXITCODE_SUFFIX}"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            code, when = p.read_text().split()[:2]
            found.append((float(when), int(code)))
    return sorted(found)


def exit_code(launcher_rc: int, recorded: Sequence[tuple[float, int]], reported: Sequence[int]) -> int:
    """The run's exit code from what the workers recorded and what torchrun reported (pure).

    Args:
        launcher_rc: The launcher's return code (negative: it died of that signal).
        recorded: ``(time, code)`` per worker that recorded one.
        reported: Exit codes torchrun's failure report named (negative: killed by that signal).
    """
    for _, code in sorted(recorded):
        if code != 0:
            return code
    for code in reported:
        if code < 0:
            return 128 - code
        if code != 0:
            return code
    if launcher_rc < 0:
        return 128 - launcher_rc
    return launcher_rc


def run_plan(plan: LaunchPlan, worker: Worker, log_dir: Path) -> int:
    """Run ``worker`` as ``plan`` says and return its exit code.

    In-process plans call ``worker.module.main(argv)`` here (its own code, Ctrl-C 130). Other plans start
    the launcher as a child process with ``plan.env`` added to the environment.
    """
    if plan.backend == "inprocess":
        with _environ(plan.env):
            from vggtctl.launch.entry import run_worker

            return run_worker(worker.module, worker.argv)
    log_dir.mkdir(parents=True, exist_ok=True)
    for stale in log_dir.glob(f"rank*{EXITCODE_SUFFIX}"):
        stale.unlink()
    argv = worker_command(plan, worker, log_dir)
    env = {**os.environ, **plan.env}
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, start_new_session=True)  # noqa: S603
    reported: list[int] = []
    pump = threading.Thread(target=_pump_stderr, args=(proc.stderr, reported), daemon=True)
    pump.start()

    def forward(signum: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, forward) for s in _FORWARDED}
    try:
        rc = proc.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        pump.join(5.0)
    return exit_code(rc, _recorded_codes(log_dir), reported)
