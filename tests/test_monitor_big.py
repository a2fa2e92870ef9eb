"""A 1 GB log: the summary reads the tail (and the head's first progress line), not the gigabyte."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vggtctl.cli.app import app

GIB = 1 << 30
# What fills a long torchrun log between progress lines: the same warnings from every rank, over and over.
FILLER = b"".join(
    f"[rank{r}]:/opt/conda/lib/python3.10/site-packages/torch/utils/checkpoint.py:91: UserWarning: None of the "
    f"inputs have requires_grad=True. Gradients will be None\n[rank{r}]:  warnings.warn(\n".encode()
    for r in range(8)
)


def _bar(step: int, total: int = 28710, rate: float = 55.0) -> bytes:
    e = int(step * rate)
    left = int((total - step) * rate)
    return (
        f"[rank0]:\r  {100 * step // total}%|          | {step}/{total} "
        f"[{e // 3600}:{e % 3600 // 60:02d}:{e % 60:02d}<{left // 3600}:{left % 3600 // 60:02d}:{left % 60:02d}, "
        f"{rate:.2f}s/it]\n"
    ).encode()


def write_big_log(path: Path, size: int = GIB) -> None:
    """Steps 0..199 at the start, ~1 GB of warnings, then steps 10000..10099 at 55 s/it with a loss every 10."""
    head = b"".join(_bar(n) for n in range(200))
    tail = b"".join(
        _bar(n)
        + (f"[rank0]:{{'loss': {2000 / n:.6f}, 'learning_rate': 2e-05}}\n".encode() if n % 10 == 0 else b"")
        for n in range(10_000, 10_100)
    )
    block = FILLER * ((64 << 20) // len(FILLER))
    with open(path, "wb") as f:
        f.write(head)
        written = len(head) + len(tail)
        while written < size:
            piece = block[: size - written]
            piece = piece[: piece.rfind(b"\n") + 1] or FILLER  # whole lines only, as torchrun writes them
            f.write(piece)
            written += len(piece)
        f.write(tail)


@pytest.mark.slow
def test_one_gigabyte_log_summary_reads_only_what_it_needs(tmp_path: Path) -> None:
    path = tmp_path / "train.log"
    try:
        write_big_log(path)
        now = time.time()
        os.utime(path, (now, now))
        r = CliRunner().invoke(app, ["monitor", str(path), "--json", "--window", "20"])
        assert r.exit_code == 0, r.output
        s = json.loads(r.stdout)
        assert s["file_bytes"] == path.stat().st_size >= GIB
        # The tail until the last 20 updates are in, then on to 8 MiB in all looking for 20 losses (this
        # log has 10; reads come in doubling blocks): megabytes, not the gigabyte.
        assert s["scanned_bytes"] < 32 << 20
        assert (s["step"], s["total_steps"], s["state"], s["slowest_rank"]) == (
            10_099,
            28_710,
            "running",
            None,
        )
        assert s["recent"]["s_per_it"]["median"] == 55.0 and s["recent"]["count"] == 20
        assert s["eta_s"] == pytest.approx((28_710 - 10_099) * 55.0)
        assert s["elapsed_s"] == 10_099 * 55
        # Overall mean from the head's first line (step 0, 0:00) to the last (step 10099, 154:16:45).
        assert s["overall"]["s_per_it"]["mean"] == pytest.approx(55.0)
        losses = [2000 / n for n in range(10_000, 10_100, 10)]
        assert s["loss"]["count"] == 10
        assert s["loss"]["moving_avg"] == pytest.approx(sum(round(v, 6) for v in losses) / 10)
    finally:
        path.unlink(missing_ok=True)
