"""What the two local servers (``vggtctl view``, ``vggtctl app``) share: the port check and the URL.

Both libraries underneath move on to the next port when the asked one is taken (viser) or fail with
their own message (Gradio); a user who asked for ``--port 8080`` should hear that 8080 is in use instead.
"""

from __future__ import annotations

import errno
import socket

from vggtctl.errors import UsageError, VggtctlError

LOOPBACK = "127.0.0.1"


class PortInUseError(VggtctlError):
    """The port asked for is taken (exit 1)."""


def check_port_free(host: str, port: int) -> None:
    """Refuse a port that something already listens on (``port`` 0 = any free port, always fine).

    Raises:
        PortInUseError: Another process holds ``host:port``.
        UsageError: ``port`` is out of range or ``host`` is not an address of this machine.
    """
    if not 0 <= port <= 65535:
        raise UsageError(
            f"port {port} is out of range (0-65535)", "use e.g. --port 8080, or --port 0 for any"
        )
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # The servers set SO_REUSEADDR too: a port left in TIME_WAIT by a stopped server is free for them.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"port {port} on {host} is in use (another server listens there)",
                    f"stop that server, or pick another port: --port {port + 1} (or --port 0 for any free one)",
                ) from None
            raise UsageError(
                f"cannot listen on {host}:{port}: {e.strerror}",
                "use --host 127.0.0.1 (this machine only) or an address of this machine",
            ) from None


def free_port(host: str = LOOPBACK) -> int:
    """A port that is free on ``host`` now (for a server that must know its port before it starts)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def url_for(host: str, port: int) -> str:
    """The URL to open: ``0.0.0.0``/``::`` (every interface) is reached through loopback on this machine."""
    shown = {"0.0.0.0": LOOPBACK, "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
    return f"http://{shown}:{port}/"
