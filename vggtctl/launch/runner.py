"""Execute a :class:`~vggtctl.launch.plan.LaunchPlan`: in this process, or torchrun / deepspeed as a child.

- argv lists, never a shell;
- each worker's output in ``logs/rank{N}.log`` (through :mod:`vggtctl.launch.entry`);
- SIGINT and SIGTERM sent to this process are forwarded to the launcher, which forwards them to every
  worker (the child runs in its own session, so a terminal's Ctrl-C reaches it once, through us);
- the exit code is the workers' own: the earliest non-zero code a worker recorded, else the code of a
  worker killed by signal N as 128+N (read from torchrun's failure report), else the launcher's;
- a plan whose port is ``port_movable`` holds that port from before the start to the end, and when rank 0
  still fails to bind it (EADDRINUSE) it is launched again on a fresh port, up to :data:`PORT_ATTEMPTS`
  starts in all, with a warning naming both ports (:mod:`vggtctl.launch.port_hold`); any other port
  found taken that way is a :class:`~vggtctl.errors.LaunchError` that says what to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vggtctl.errors import LaunchError
from vggtctl.launch.plan import LaunchPlan
from vggtctl.launch.port_hold import PortHold, hold, names_lost_port

log = logging.getLogger(__name__)

ENTRY_MODULE = "vggtctl.launch.entry"
# Not imported here: every rank runs it with `python -m`, and a package that had imported it already makes
# runpy warn in every worker ('found in sys.modules ... unpredictable behaviour').
EXITCODE_SUFFIX = ".exitcode"  # vggtctl.launch.entry writes rank{N}.exitcode
_FORWARDED = (signal.SIGINT, signal.SIGTERM)
# torchrun's failure summary: "  exitcode  : -9 (pid: 1234)"
_EXITCODE_LINE = re.compile(rb"exitcode\s*:\s*(-?\d+)")
PORT_ATTEMPTS = 3
"""Starts of a ``port_movable`` plan, each on a fresh port, before a port taken every time is an error."""


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


def _pump_stderr(src: IO[bytes], seen: list[int], port: int | None, lost: list[bool]) -> None:
    # The launcher's own lines and rank 0's (it echoes its log here): torchrun's agent or rank 0 binds the port.
    for line in iter(src.readline, b""):
        m = _EXITCODE_LINE.search(line)
        if m:
            seen.append(int(m.group(1)))
        if port is not None and not lost and names_lost_port(line.decode(errors="replace"), port):
            lost.append(True)
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


def run_plan(
    plan: LaunchPlan,
    worker: Worker,
    log_dir: Path,
    *,
    before_start: Callable[[LaunchPlan], None] | None = None,
) -> int:
    """Run ``worker`` as ``plan`` says and return its exit code.

    In-process plans call ``worker.module.main(argv)`` here (its own code, Ctrl-C 130). Other plans start
    the launcher as a child process with ``plan.env`` added to the environment.

    Args:
        plan: From :func:`vggtctl.launch.plan_for`.
        worker: The module every rank runs, with its argv.
        log_dir: Where the rank logs go.
        before_start: Called with the plan of each start, once its port is held and just before the launcher
            starts (tests take the port there, as a process racing for it would).

    Raises:
        LaunchError: Rank 0 found the rendezvous port taken, and it was one the user gave, one that several
            nodes dial, or taken again on each of :data:`PORT_ATTEMPTS` starts.
    """
    if plan.backend == "inprocess":
        with _environ(plan.env):
            from vggtctl.launch.entry import run_worker

            return run_worker(worker.module, worker.argv)
    log_dir.mkdir(parents=True, exist_ok=True)
    held: PortHold | None = None
    if plan.port_movable and plan.master_port is not None:
        held = hold(plan.master_port)
        if held is None and (held := hold()) is not None:
            log.warning(
                "port %d was taken after the plan chose it; using free port %d for the rendezvous",
                plan.master_port,
                held.port,
            )
            plan = _on_port(plan, held.port)
    tried: list[int] = []
    try:
        while True:
            if before_start is not None:
                before_start(plan)
            code, lost = _start(plan, worker, log_dir)
            if code == 0 or not lost or plan.master_port is None:
                return code
            tried.append(plan.master_port)
            fresh = hold() if plan.port_movable and len(tried) < PORT_ATTEMPTS else None
            if fresh is None:
                raise _port_lost(plan, tried)
            log.warning(
                "port %d was taken before rank 0 could bind it (EADDRINUSE); launching again on free port %d "
                "(start %d of %d)",
                plan.master_port,
                fresh.port,
                len(tried) + 1,
                PORT_ATTEMPTS,
            )
            if held is not None:
                held.release()
            held, plan = fresh, _on_port(plan, fresh.port)
    finally:
        if held is not None:
            held.release()


def _on_port(plan: LaunchPlan, port: int) -> LaunchPlan:
    # Only port_movable plans move: one node, so the rendezvous is local.
    return dataclasses.replace(plan, master_port=port, rendezvous=f"local ({plan.master_addr}:{port})")


def _port_lost(plan: LaunchPlan, tried: Sequence[int]) -> LaunchError:
    port = tried[-1]
    if plan.port_movable:
        return LaunchError(
            f"the rendezvous ports {', '.join(map(str, tried))} were each taken before rank 0 could bind them "
            f"(EADDRINUSE, {len(tried)} starts)",
            "give a free port with --master-port P (or MASTER_PORT=P): something on this machine keeps "
            "taking the ports found free",
        )
    if plan.nnodes > 1:
        return LaunchError(
            f"master_port {port} was taken on node 0 before rank 0 could bind it (EADDRINUSE)",
            "every node dials this port, so it cannot be moved from here: start every node again with the "
            "same free --master-port P (or MASTER_PORT=P)",
        )
    src = plan.source.get("master_port")
    given = f" (from {'--master-port' if src == 'flag' else src})" if src else ""
    return LaunchError(
        f"master_port {port}{given} was taken by another process before rank 0 could bind it (EADDRINUSE); "
        "a port you give is never changed",
        "give a free port with --master-port P (or MASTER_PORT=P), or leave both unset so the launcher "
        "picks one",
    )


def _start(plan: LaunchPlan, worker: Worker, log_dir: Path) -> tuple[int, bool]:
    """Run the launcher once: the exit code, and whether rank 0 (or torchrun's agent) found the port taken."""
    for stale in log_dir.glob(f"rank*{EXITCODE_SUFFIX}"):
        stale.unlink()
    argv = worker_command(plan, worker, log_dir)
    env = {**os.environ, **plan.env}
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, start_new_session=True)  # noqa: S603
    reported: list[int] = []
    lost: list[bool] = []
    pump = threading.Thread(
        target=_pump_stderr, args=(proc.stderr, reported, plan.master_port, lost), daemon=True
    )
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
    return exit_code(rc, _recorded_codes(log_dir), reported), bool(lost)
