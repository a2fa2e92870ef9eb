"""An in-process HTTP file server on 127.0.0.1 for download tests and benchmarks.

Serves the files of one folder with GET/HEAD, optional ``Range`` support, and scripted faults per file
name: drop the connection after N body bytes, answer 500 a few times, send a 206 that starts at the
wrong offset, throttle, or signal a callback once N bytes went out. Body bytes go out with
``socket.sendfile`` so the server is not the bottleneck of throughput measurements.

Usage::

    with LoopbackServer(folder, range_support=True) as srv:
        srv.faults["a.7z"] = Fault(drop_after=1000)
        requests.get(srv.url + "a.7z")
"""

from __future__ import annotations

import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Fault:
    """Misbehaviour for one file.

    Attributes:
        drop_after: close the connection after this many body bytes (for the next ``drops`` GETs).
        drops: how many GETs are cut short.
        reset: cut them with a TCP reset (RST, ``ConnectionResetError`` on the client) instead of a clean close.
        fail_status: answer this status instead (for the next ``fails`` GETs).
        fails: how many GETs fail.
        bad_range_offset: answer Range requests with a 206 starting this many bytes too early.
        bad_ranges: how many Range requests get the bad 206.
        throttle_bps: bytes per second (sent in 64 KiB slices).
        on_sent: called once (from the server thread) when ``on_sent_after`` body bytes went out.
        on_sent_after: see ``on_sent``.
    """

    drop_after: int | None = None
    drops: int = 1
    reset: bool = False
    fail_status: int | None = None
    fails: int = 0
    bad_range_offset: int = 0
    bad_ranges: int = 0
    throttle_bps: float | None = None
    on_sent: Callable[[], None] | None = None
    on_sent_after: int = 0


@dataclass
class RequestRecord:
    method: str
    path: str
    range: str | None
    status: int


class LoopbackServer:
    """Serve ``root`` on ``http://127.0.0.1:<port>/`` (``.url``) in a background thread."""

    def __init__(self, root: str | os.PathLike[str], *, range_support: bool = True) -> None:
        self.root = Path(root)
        self.range_support = range_support
        self.faults: dict[str, Fault] = {}
        self.log: list[RequestRecord] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                return None

            def do_HEAD(self) -> None:  # noqa: N802 - stdlib naming
                server._serve(self, head=True)

            def do_GET(self) -> None:  # noqa: N802 - stdlib naming
                server._serve(self, head=False)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def requests_for(self, name: str, method: str = "GET") -> list[RequestRecord]:
        return [r for r in self.log if r.path == name and r.method == method]

    def _record(self, h: BaseHTTPRequestHandler, name: str, status: int) -> None:
        with self._lock:
            self.log.append(RequestRecord(h.command, name, h.headers.get("Range"), status))

    def _serve(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        name = h.path.lstrip("/").split("?", 1)[0]
        path = self.root / name
        fault = self.faults.get(name)
        if not name or "/" in name or not path.is_file():
            self._record(h, name, 404)
            h.send_error(404)
            return
        if fault is not None and fault.fail_status and fault.fails > 0 and not head:
            fault.fails -= 1
            self._record(h, name, fault.fail_status)
            h.send_response(fault.fail_status)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        size = path.stat().st_size
        start, status = 0, 200
        rng = h.headers.get("Range")
        if rng and self.range_support and not head:
            m = re.fullmatch(r"bytes=(\d+)-", rng.strip())
            if m:
                start = int(m.group(1))
                if start >= size:
                    self._record(h, name, 416)
                    h.send_response(416)
                    h.send_header("Content-Range", f"bytes */{size}")
                    h.send_header("Content-Length", "0")
                    h.end_headers()
                    return
                status = 206
                if fault is not None and fault.bad_ranges > 0:
                    fault.bad_ranges -= 1
                    start = max(0, start - fault.bad_range_offset)
        self._record(h, name, status)
        h.send_response(status)
        h.send_header("Content-Type", "application/x-7z-compressed")
        h.send_header("Content-Length", str(size - start))
        if self.range_support:
            h.send_header("Accept-Ranges", "bytes")
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        h.end_headers()
        if head:
            return
        limit = size - start
        cut = False
        if fault is not None and fault.drop_after is not None and fault.drops > 0:
            fault.drops -= 1
            limit, cut = min(limit, fault.drop_after), True
        try:
            self._send_body(h, path, start, limit, fault)
        except (BrokenPipeError, ConnectionResetError):
            return
        if cut:
            h.close_connection = True
            if fault is not None and fault.reset:
                time.sleep(0.2)  # let the client read what was sent: an RST discards its unread data
                _reset(h)
                return
            try:
                h.connection.shutdown(2)
            except OSError:
                pass

    def _send_body(
        self, h: BaseHTTPRequestHandler, path: Path, start: int, count: int, fault: Fault | None
    ) -> None:
        sock = h.connection
        sent_total = 0
        with open(path, "rb") as f:
            if fault is None or (fault.throttle_bps is None and fault.on_sent is None):
                sock.sendfile(f, start, count)
                return
            offset = start
            while sent_total < count:
                n = min(64 * 1024, count - sent_total)
                n = sock.sendfile(f, offset, n)
                if n == 0:
                    break
                offset += n
                sent_total += n
                if fault.on_sent is not None and sent_total >= fault.on_sent_after:
                    cb, fault.on_sent = fault.on_sent, None
                    cb()
                if fault.throttle_bps:
                    time.sleep(n / fault.throttle_bps)


def _reset(h: BaseHTTPRequestHandler) -> None:
    """Close the connection with an RST: SO_LINGER 0, and the socket really closed (its file objects too)."""
    sock = h.connection
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    for f in (h.wfile, h.rfile):
        try:
            f.close()
        except OSError:
            pass
    sock.close()
