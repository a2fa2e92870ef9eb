"""Run the vggtctl CLI and press Ctrl-C at a chosen moment: a real SIGINT to this process.

    python -m tests.scripts.interrupt_at MODULE:ATTR[:N] -- vggtctl-args...

The N-th call (default 1) of ``MODULE.ATTR`` (a function, or ``Class.method``) first sends SIGINT to
this process, so the interrupt lands exactly there, the way a user's Ctrl-C would land at that moment.
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys
from typing import Any


def _install(target: str) -> None:
    module_name, attr, *rest = target.split(":")
    nth = int(rest[0]) if rest else 1
    owner: Any = importlib.import_module(module_name)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    calls = 0

    @functools.wraps(original)
    def pressed(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == nth:
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)

    setattr(owner, name, pressed)


def main() -> None:
    target, sep, *args = sys.argv[1:]
    assert sep == "--", "usage: interrupt_at MODULE:ATTR[:N] -- ARGS..."
    _install(target)
    from vggtctl.cli.app import app

    app(args=args, prog_name="vggtctl")


if __name__ == "__main__":
    main()
