"""Peak resident memory of loading and running ONE model, measured in a child process of its own.

In the comparing process the float model has been loaded before the quantized one, so its
high-water mark says little about what a user of the artifact needs. Here a fresh interpreter
imports the same libraries (torch, torchao, vggtctl's loader), loads only the one model, runs
one forward on the given frames and reports its own memory: ``baseline_bytes`` (resident size
with the imports done, nothing loaded), ``peak_load_bytes`` and ``peak_run_bytes`` (the resident
high-water mark after the load, and after the forward). The high-water mark is Linux's ``VmHWM``,
reset after the imports through ``/proc/self/clear_refs`` so an import-time spike is not counted.
Not ``ru_maxrss``: Linux carries it over from the parent through fork and exec, so a child of a
big process would report the parent's size. Run as
``python -m vggtctl.services.quantize.peak SOURCE FRAMES.npy DEVICE THREADS``; one JSON line out.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from vggtctl.utils.procfs import status_bytes


def _hwm_bytes() -> int:
    hwm = status_bytes("VmHWM")
    # Without /proc (not Linux): ru_maxrss, which is then at least this process's own peak.
    return hwm if hwm is not None else int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def child_peak(source: str, frames: Path, device: str, threads: int, timeout: float = 1800) -> dict[str, Any]:
    """Run the measurement in a child process (same interpreter and ``sys.path``); its JSON report.

    Raises:
        RuntimeError: The child failed (its stderr's last line is in the message).
    """
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    done = subprocess.run(
        [sys.executable, "-m", "vggtctl.services.quantize.peak", source, str(frames), device, str(threads)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"peak-memory child for {source} failed ({done.returncode}): {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    source, frames, device, threads = argv[0], Path(argv[1]), argv[2], int(argv[3])
    import torch

    torch.set_num_threads(threads)
    from vggtctl.services.infer import predict
    from vggtctl.services.model_loader import load_model
    from vggtctl.services.quantize.torchao_import import import_torchao

    import_torchao()  # both children import the same libraries, so the baselines match
    images = np.load(frames)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS from here on
        reset = True
    except OSError:
        reset = False
    baseline = status_bytes("VmRSS") or _hwm_bytes()
    model = load_model(source, device=device)
    loaded = _hwm_bytes()
    predict(model, images, device=device)
    print(
        json.dumps(
            {
                "baseline_bytes": baseline,
                "peak_load_bytes": loaded,
                "peak_run_bytes": _hwm_bytes(),
                "hwm_reset": reset,
                "threads": threads,
            }
        )
    )


if __name__ == "__main__":  # pragma: no cover - run by child_peak
    main(sys.argv[1:])
