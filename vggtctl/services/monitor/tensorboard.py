"""Start TensorBoard on a run's event files (the optional ``vggtctl[train]`` extra), on loopback by default."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from vggtctl.errors import InputError, UsageError, VggtctlError
from vggtctl.runs import layout

EVENT_GLOB = "events.out.tfevents.*"
START_TIMEOUT_S = 60.0


@dataclass
class TensorBoardServer:
    """A running TensorBoard; ``stop()`` ends it."""

    process: subprocess.Popen[bytes]
    url: str
    logdir: Path
    output: IO[bytes]

    def wait(self) -> int:
        return self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.output.close()


def event_dir(path: Path) -> Path:
    """Where a run's TensorBoard event files are: a run directory's ``tb/``, else the folder of a log.

    Raises:
        InputError: No ``events.out.tfevents.*`` file below it.
    """
    base = path if path.is_dir() else path.parent
    if (base / layout.TENSORBOARD).is_dir():
        base = base / layout.TENSORBOARD
    if next(base.rglob(EVENT_GLOB), None) is None:
        raise InputError(
            f"no TensorBoard event files ({EVENT_GLOB}) under {base}",
            "train with TensorBoard logging on (HF: --report_to tensorboard), or drop --tensorboard",
        )
    return base


def tensorboard_command(logdir: Path, host: str, port: int) -> list[str]:
    """The argv that serves ``logdir`` (list form: no shell)."""
    return [
        sys.executable,
        "-m",
        "tensorboard.main",
        "--logdir",
        str(logdir),
        "--host",
        host,
        "--port",
        str(port),
    ]


def _require_tensorboard() -> None:
    try:
        found = importlib.util.find_spec("tensorboard") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise VggtctlError(
            "TensorBoard is not installed (it comes with the optional 'train' extra)",
            "pip install 'vggtctl[train]'   (or: pip install tensorboard)",
        )


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _accepting(host: str, port: int) -> bool:
    target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    try:
        with socket.create_connection((target, port), timeout=0.5):
            return True
    except OSError:
        return False


def start_tensorboard(path: Path, host: str = "127.0.0.1", port: int = 6006) -> TensorBoardServer:
    """Serve the event files of ``path`` (run directory or log's folder) and wait until it answers.

    Args:
        path: Run directory or log file.
        host: Address to bind; loopback unless the user asks otherwise.
        port: TCP port.

    Returns:
        The running server.

    Raises:
        VggtctlError: TensorBoard missing (hint: ``pip install 'vggtctl[train]'``), port busy, or it exited.
        InputError: No event files.
    """
    _require_tensorboard()
    logdir = event_dir(path)
    if not 0 < port < 65536:
        raise UsageError(f"--port must be in 1..65535, got {port}", "e.g. --port 6006")
    if not _port_free(host, port):
        raise VggtctlError(f"port {port} on {host} is already in use", f"pick another one: --port {port + 1}")
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(tensorboard_command(logdir, host, port), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            tail = log.read().decode("utf-8", "replace").strip().splitlines()[-1:] or ["(no output)"]
            log.close()
            raise VggtctlError(
                f"TensorBoard exited with code {proc.returncode}: {tail[0]}",
                f"run it by hand to see why: {' '.join(tensorboard_command(logdir, host, port))}",
            )
        if _accepting(host, port):
            shown = f"[{host}]" if ":" in host else host
            return TensorBoardServer(proc, f"http://{shown}:{port}/", logdir, log)
        time.sleep(0.2)
    proc.terminate()
    log.close()
    raise VggtctlError(
        f"TensorBoard did not answer on port {port} within {START_TIMEOUT_S:.0f} s", "try again"
    )
