"""benchmarks/gpu_check.sh's budget rules, run on CPU with a stand-in interpreter (no GPU, nothing heavy).

The stand-in logs each command it is given and fails the one-pass 300-frame scale row: the script must then
still run the chunked row, not grow to 600/1000 frames, and write one summary line per step.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAKE = """#!/bin/bash
if [ "$1" = "-" ]; then exec {python} "$@"; fi
echo "$*" >> {log}
case "$*" in *"--rows 300x518x518 "*) exit 3;; esac
"""


def _run(tmp_path: Path, budget: int) -> tuple[subprocess.CompletedProcess[str], list[str], str]:
    log = tmp_path / "calls.txt"
    fake = tmp_path / "python"
    fake.write_text(FAKE.format(python=sys.executable, log=log))
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake), "GPU_CHECK_BUDGET": str(budget)}
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    calls = log.read_text().splitlines() if log.is_file() else []
    return proc, calls, (out / "summary.txt").read_text()


def test_scale_rows_stop_growing_after_a_failed_row(tmp_path: Path) -> None:
    proc, calls, summary = _run(tmp_path, 540)
    assert proc.returncode == 0, proc.stderr
    rows = [c.split("--rows ")[1].split()[0] for c in calls if "bench_scale.py" in c]
    assert rows == ["100x518x518", "300x518x518", "1000x518x518:200:20"]
    assert any("bench_quantize.py --device cuda" in c for c in calls)
    assert [c.split("--strategy-1b ")[1][0] for c in calls if "bench_finetune.py" in c] == ["a", "b", "c"]
    assert "scale-300x518x518: exit 3" in summary
    real = [c for c in calls if "bench_train_vln.py" in c and "--size " in c]
    assert [c.split("--size ")[1].split()[0] for c in real] == ["3b", "7b"]
    assert all("--device cuda" in c and "--steps 2" in c for c in real)
    assert (
        "tests: ok" in summary
        and "vln-tiny: ok" in summary
        and "vln-3b: ok" in summary
        and "total:" in summary
    )


def test_no_step_starts_without_budget(tmp_path: Path) -> None:
    proc, calls, summary = _run(tmp_path, 10)
    assert proc.returncode == 0, proc.stderr
    assert [c for c in calls if "benchmarks/" in c or "pytest" in c] == []
    assert summary.count("skipped") >= 8 and "vln-7b: skipped (budget)" in summary
