"""Run every benchmarks/bench_*.py in its own process (clean peak-RSS numbers); JSON into --out."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--only", nargs="*", help="bench names (e.g. model monitor) to run")
    ap.add_argument("extra", nargs=argparse.REMAINDER, help="arguments passed to each benchmark")
    args = ap.parse_args()
    env = {**os.environ, "VGGTCTL_BENCH_OUT": args.out}
    failed = []
    for script in sorted(HERE.glob("bench_*.py")):
        name = script.stem.removeprefix("bench_")
        if args.only and name not in args.only:
            continue
        print(f"== {script.name}", flush=True)
        rc = subprocess.call([sys.executable, str(script), *args.extra], env=env)
        if rc:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
