"""Each worker's stdout and stderr copied into ``logs/rank{N}.log`` of the run directory.

The copy works on file descriptors, so it also catches what native code (NCCL, the C++ of torch) and
child processes print. Rank 0 keeps printing to the terminal too, both streams on its stderr: the command's
stdout carries only the result the command itself prints (``--json`` stays one document, whatever DeepSpeed or
a worker prints); other ranks write only to their log, so the terminal shows one rank's progress, not eight
interleaved ones.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

_JOIN_S = 5.0


def _pump(read_fd: int, log: BinaryIO, echo_fd: int | None) -> None:
    try:
        while True:
            data = os.read(read_fd, 65536)
            if not data:
                return
            log.write(data)
            if echo_fd is not None:
                with contextlib.suppress(OSError):
                    os.write(echo_fd, data)
    finally:
        os.close(read_fd)


@contextlib.contextmanager
def tee_to_rank_log(log_path: Path, *, echo: bool) -> Iterator[None]:
    """Within the block, fds 1 and 2 go to ``log_path`` (appended), and to the terminal when ``echo``.

    Args:
        log_path: The rank's log file (created with its folder).
        echo: Also write both streams to the original stderr (rank 0).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    log = open(log_path, "ab", buffering=0)  # noqa: SIM115 - closed below, after the pumps end
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    pumps = []
    for fd in (1, 2):
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, fd)
        os.close(write_fd)
        t = threading.Thread(target=_pump, args=(read_fd, log, saved[2] if echo else None), daemon=True)
        t.start()
        pumps.append(t)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        for fd in (1, 2):
            os.dup2(saved[fd], fd)  # drops the pipe's last write end here: the pump reads EOF
        for t in pumps:
            t.join(_JOIN_S)  # a child that inherited the pipe keeps it open: do not wait for it forever
        for fd in (1, 2):
            os.close(saved[fd])  # after the joins: the pumps echo the last lines to saved[2]
        log.close()
