"""What every launched process runs: ``python -m vggtctl.launch.entry --log-dir DIR MODULE [ARGS...]``.

It copies the process's output into ``DIR/rank{RANK}.log``, imports ``MODULE``, calls its
``main(argv: list[str]) -> int``, and records the exit code in ``DIR/rank{RANK}.exitcode`` so the runner can
pass the worker's own code through (torchrun itself only says "failed").
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from vggtctl.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE
from vggtctl.launch.rank_logs import tee_to_rank_log
from vggtctl.launch.runner import EXITCODE_SUFFIX
from vggtctl.runs.layout import rank_log_name
from vggtctl.runtime.dist import dist_info
from vggtctl.utils.atomic import atomic_write_text

TEED_ENV = "VGGTCTL_RANK_LOG_TEED"
"""Set in every launched worker: its stdout/stderr already go to its rank log (write step lines to stderr)."""


def exitcode_path(log_dir: Path, rank: int) -> Path:
    """``DIR/rank{N}.exitcode``: ``"<code> <unix time>"``, written when the worker returns."""
    return log_dir / f"rank{rank}{EXITCODE_SUFFIX}"


def run_worker(module: str, argv: Sequence[str]) -> int:
    """Import ``module`` and return ``module.main(list(argv))`` as an exit code.

    ``SystemExit`` gives its code; Ctrl-C 130; any other exception prints its traceback and gives 1.
    """
    try:
        target = importlib.import_module(module).main
    except (ImportError, AttributeError) as e:
        print(f"Error: cannot run worker {module!r}: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        code = target(list(argv))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_FAILURE)
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except Exception:  # noqa: BLE001 - the worker's last word goes to its rank log
        traceback.print_exc()
        code = EXIT_FAILURE
    return int(code or 0)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3 or args[0] != "--log-dir":
        print("usage: python -m vggtctl.launch.entry --log-dir DIR MODULE [ARGS...]", file=sys.stderr)
        return EXIT_USAGE
    log_dir, module, rest = Path(args[1]), args[2], args[3:]
    info = dist_info()
    os.environ[TEED_ENV] = "1"
    with tee_to_rank_log(log_dir / rank_log_name(info.rank), echo=info.is_rank_zero):
        code = run_worker(module, rest)
    atomic_write_text(exitcode_path(log_dir, info.rank), f"{code} {time.time():.6f}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
