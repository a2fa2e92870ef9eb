"""Run the vggtctl CLI and count the TCP connections it attempts (CPython audit events, not a mock).

Usage: ``python cli_counting_connects.py COUNT_FILE ARGS...``; writes ``{"connects": [[host, port], ...]}``
to COUNT_FILE at exit, whatever the exit status.
"""

from __future__ import annotations

import atexit
import json
import sys

connects: list[list[object]] = []


def _audit(event: str, args: tuple) -> None:
    if event == "socket.connect":
        addr = args[1]
        if isinstance(addr, tuple) and len(addr) >= 2:
            connects.append([str(addr[0]), int(addr[1])])


count_file, argv = sys.argv[1], sys.argv[2:]
sys.addaudithook(_audit)
atexit.register(lambda: open(count_file, "w").write(json.dumps({"connects": connects})))
sys.argv = ["vggtctl", *argv]

from vggtctl.cli.app import main  # noqa: E402 - after the hook, so every connection is seen

main()
