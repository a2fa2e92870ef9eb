"""The rendezvous port of a launch that chose it itself: held from before the start to the end, moved if lost.

A deepspeed-runner plan on one node names its port (the runner has no port-0 rendezvous: it hands
``--master_port`` to the workers, and rank 0's TCPStore binds it seconds later, once torch is imported).
Whatever binds the port in that window fails the launch with EADDRINUSE. Worse, when that is another
launch's rank 0 (two launches started together both plan 29500), this launch's other ranks join *that*
launch's store and break it too: both launches fail, not one.

- :func:`hold` binds the port without ``SO_REUSEADDR``, which is atomic: of two launches one gets it, and
  another launch's probe (:func:`~vggtctl.launch.detect.port_in_use`, a bind to port 0) then finds it taken.
  The socket then sets ``SO_REUSEADDR`` and never listens, so rank 0's TCPStore, which binds with
  ``SO_REUSEADDR``, still can (Linux lets sockets that all set it share a port while none of them listens).
  Linux only: elsewhere nothing is held, and only the relaunch applies.
- :func:`names_lost_port` finds torch's bind error for the port in a line the launcher or rank 0 printed
  (``... port: 29500, useIpv6: false, code: -98, name: EADDRINUSE, message: address already in use``). A
  process binding with ``SO_REUSEADDR`` itself (another job's TCPStore) can still take a held port; the runner
  then relaunches on a fresh one.
"""

from __future__ import annotations

import contextlib
import re
import socket
import sys
from dataclasses import dataclass

HOLDS = sys.platform.startswith("linux")
_BIND_ERROR = re.compile(r"EADDRINUSE|address already in use", re.IGNORECASE)


@dataclass
class PortHold:
    """A port kept out of other launches' probes until :meth:`release`.

    Attributes:
        port: The port.
        sock: The socket bound to it, or ``None`` where ports are not held (not Linux).
    """

    port: int
    sock: socket.socket | None = None

    def release(self) -> None:
        """Close the socket (idempotent): the port is anybody's again."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None


def hold(port: int = 0) -> PortHold | None:
    """Hold ``port`` (0: a free one the OS picks); ``None`` when it is bound already.

    Args:
        port: The port to hold, or 0 for any free one.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("", port))
    except OSError:
        s.close()
        return None
    held = PortHold(int(s.getsockname()[1]), s)
    if HOLDS:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    else:
        held.release()
    return held


def names_lost_port(line: str, port: int) -> bool:
    """True when ``line`` is a bind error (EADDRINUSE) that names ``port`` (a bare one without it is not)."""
    return bool(_BIND_ERROR.search(line)) and re.search(rf"(?<!\d){port}(?!\d)", line) is not None


__all__ = ["HOLDS", "PortHold", "hold", "names_lost_port"]
