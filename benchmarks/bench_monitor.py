"""`vggtctl monitor` on a 1 GB log (tail-first summary and a full streaming pass) and the CPU cost of --follow.

Each measurement runs in its own process (clean peak RSS). Two generated logs of --size bytes:
  dense:  HF Trainer under torchrun, 8 ranks: every step a tqdm redraw plus each rank's two warning lines,
          a loss dict every 10 steps (about 1.4 KB per step, ~750k steps per GB: every line is near a marker);
  sparse: the same warnings with progress only in the first 200 and last 100 steps (the 1 GB test's log).
Modes: summary (what `vggtctl monitor LOG` does: tail-first), plot (`--plot`: that plus one forward pass
reading about 20k evenly spaced tqdm bars), full (every line, as done for files under 32 MiB).
The follow measurement runs the real CLI (`vggtctl monitor LOG --follow`) while this process appends a
progress line every 0.5 s, and reads the follower's CPU time from /proc.

    python benchmarks/bench_monitor.py [--size 1073741824] [--follow-seconds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import peak_rss_mb, write_result  # noqa: E402

TOTAL = 10_000_000
WARNINGS = b"".join(
    f"[rank{r}]:/opt/conda/lib/python3.10/site-packages/torch/utils/checkpoint.py:91: UserWarning: None of the "
    f"inputs have requires_grad=True. Gradients will be None\n[rank{r}]:  warnings.warn(\n".encode()
    for r in range(8)
)


def _clock(seconds: int) -> str:
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def bar(step: int, rate: float = 55.0) -> bytes:
    return (
        f"[rank0]:\r  {100 * step // TOTAL}%|          | {step}/{TOTAL} "
        f"[{_clock(int(step * rate))}<{_clock(int((TOTAL - step) * rate))}, {rate:.2f}s/it]\n"
    ).encode()


def loss(step: int) -> bytes:
    return f"[rank0]:{{'loss': {2000 / (step + 1000):.4f}, 'learning_rate': 2e-05, 'epoch': 0.01}}\n".encode()


def make_dense(path: Path, size: int) -> int:
    """Returns the number of steps written."""
    step = 0
    written = 0
    with open(path, "wb") as f:
        while written < size:
            parts = []
            for _ in range(1000):
                step += 1
                parts.append(bar(step))
                if step % 10 == 0:
                    parts.append(loss(step))
                parts.append(WARNINGS)
            data = b"".join(parts)
            f.write(data)
            written += len(data)
    return step


def make_sparse(path: Path, size: int) -> int:
    head = b"".join(bar(n) for n in range(200))
    tail = b"".join(bar(n) + (loss(n) if n % 10 == 0 else b"") for n in range(10_000, 10_100))
    block = WARNINGS * ((64 << 20) // len(WARNINGS))
    with open(path, "wb") as f:
        f.write(head)
        written = len(head) + len(tail)
        while written < size:
            piece = block[: max(len(WARNINGS), (size - written) // len(WARNINGS) * len(WARNINGS))]
            f.write(piece)
            written += len(piece)
        f.write(tail)
    return 10_099


def _peak_rss_mb() -> float:
    # ru_maxrss survives exec on Linux (it would report this benchmark's parent); VmHWM does not.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mb()


def measure(mode: str, path: str) -> None:
    """Child process: ``summary`` (what `vggtctl monitor LOG` does), ``full`` (every line, as for a file
    under 32 MiB) or ``plot`` (`--plot`: tail-first summary plus a thinned forward pass); prints JSON."""
    from vggtctl.services.monitor import MonitorRequest, summarize

    full = 1 << 62 if mode == "full" else MonitorRequest([]).full_read_bytes
    plot = Path(path).with_suffix(".png") if mode == "plot" else None
    wall, cpu = time.perf_counter(), time.process_time()
    s = summarize(MonitorRequest([Path(path)], full_read_bytes=full, plot=plot))
    out = {
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "peak_rss_mb": _peak_rss_mb(),
        "scanned_bytes": s.scanned_bytes,
        "step": s.step,
        "s_per_it_median": s.recent.median if s.recent else None,
        "overall_updates": s.overall.count if s.overall else None,
    }
    print(json.dumps(out))


def run_child(mode: str, path: Path) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, __file__, "--measure", mode, str(path)], check=True, capture_output=True, text=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def follow_cpu(tmp: Path, seconds: float, interval: float) -> dict[str, object]:
    """CPU share of one core used by `vggtctl monitor --follow` while a log grows slowly."""
    log = tmp / "follow.log"
    log.write_bytes(b"".join(bar(n, 0.5) for n in range(1, 100)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "vggtctl", "monitor", str(log), "--follow", "--interval", str(interval)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(3.0)  # imports and the first read are start-up, not the follow loop
    start_cpu, start = _cpu_seconds(proc.pid), time.monotonic()
    step = 100
    while time.monotonic() - start < seconds:
        with open(log, "ab") as f:
            f.write(bar(step, 0.5))
            if step % 10 == 0:
                f.write(loss(step))
        step += 1
        time.sleep(0.5)
    used = _cpu_seconds(proc.pid) - start_cpu
    elapsed = time.monotonic() - start
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    return {
        "seconds": elapsed,
        "interval_s": interval,
        "cpu_s": used,
        "cpu_pct_of_one_core": 100 * used / elapsed,
        "status_lines": len(out.splitlines()),
        "exit_code": proc.returncode,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1 << 30, help="bytes per generated log")
    ap.add_argument("--follow-seconds", type=float, default=20.0)
    ap.add_argument("--interval", type=float, default=2.0, help="--follow refresh interval")
    ap.add_argument("--measure", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args, _ = ap.parse_known_args()
    if args.measure:
        measure(*args.measure)
        return
    result: dict[str, object] = {"size_bytes": args.size}
    with tempfile.TemporaryDirectory(prefix="vggtctl-bench-monitor-") as d:
        tmp = Path(d)
        for name, make in (("dense", make_dense), ("sparse", make_sparse)):
            path = tmp / f"{name}.log"
            t = time.perf_counter()
            steps = make(path, args.size)
            entry: dict[str, object] = {"generate_s": time.perf_counter() - t, "steps": steps}
            for mode in ("summary", "plot", "full"):
                r = run_child(mode, path)
                r["mb_per_s"] = path.stat().st_size / 2**20 / r["wall_s"]  # type: ignore[operator]
                entry[mode] = r
                print(f"{name} {mode}: {json.dumps(r)}", flush=True)
            result[name] = entry
            path.unlink()
        result["follow"] = follow_cpu(tmp, args.follow_seconds, args.interval)
        print(f"follow: {json.dumps(result['follow'])}", flush=True)
    print(write_result("monitor", result))


if __name__ == "__main__":
    main()
