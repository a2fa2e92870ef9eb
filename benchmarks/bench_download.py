"""Download and extraction speed of `vggtctl download eth3d` against the obvious tools.

* loopback HTTP throughput of ``vggtctl.services.fetch.fetch`` (with and without the inline sha256)
  vs ``curl`` fetching the same file from the same in-process server (sendfile-backed), best of N;
* resume overhead: a transfer cut at half way and resumed (Range), vs an uninterrupted one;
* extraction speed of ``safe_extract`` (py7zr) vs the ``7z`` command on the same ETH3D-like archive
  (raw float32 depth maps with invalid holes + incompressible JPEG-like blobs); the row is skipped when
  ``7z`` is missing (Debian: ``apt-get install -y p7zip-full``).

Writes ``benchmarks/results/download.json`` (or ``$VGGTCTL_BENCH_OUT``).

    python benchmarks/bench_download.py [--size-mb 256] [--extract-mb 80] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import peak_rss_mb, write_result  # noqa: E402
from tests.loopback_http import Fault, LoopbackServer  # noqa: E402
from vggtctl.services.extract import safe_extract  # noqa: E402
from vggtctl.services.fetch import RetryPolicy, fetch  # noqa: E402


def _best(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_http(tmp: Path, size_mb: int, repeat: int) -> dict[str, object]:
    served = tmp / "served"
    served.mkdir()
    size = size_mb * 1_000_000
    rng = np.random.default_rng(0)
    with open(served / "blob.7z", "wb") as f:
        for _ in range(size // 10_000_000):
            f.write(rng.bytes(10_000_000))
        f.write(rng.bytes(size % 10_000_000))
    dst = tmp / "dst"
    dst.mkdir()
    policy = RetryPolicy(retries=3, backoff=0.05)
    out: dict[str, object] = {"bytes": size}
    with LoopbackServer(served) as srv:
        url = srv.url + "blob.7z"

        def clean() -> None:
            for p in dst.iterdir():
                p.unlink()

        curl = shutil.which("curl")
        if curl:

            def run_curl() -> None:
                clean()
                subprocess.run([curl, "-s", "-f", "-o", str(dst / "blob.7z"), url], check=True)

            t = _best(run_curl, repeat)
            out["curl_s"] = round(t, 3)
            out["curl_MBps"] = round(size / t / 1e6, 1)

        def run_fetch(verify: bool) -> None:
            clean()
            fetch(url, dst / "blob.7z", expected_bytes=size, verify=verify, policy=policy)

        for verify in (False, True):
            t = _best(lambda v=verify: run_fetch(v), repeat)
            key = "vggtctl_sha256" if verify else "vggtctl_nohash"
            out[f"{key}_s"] = round(t, 3)
            out[f"{key}_MBps"] = round(size / t / 1e6, 1)
            if curl:
                out[f"{key}_vs_curl"] = round(float(out["curl_s"]) / t, 3)  # type: ignore[arg-type]

        def run_resume() -> None:
            clean()
            srv.faults["blob.7z"] = Fault(drop_after=size // 2)
            fetch(url, dst / "blob.7z", expected_bytes=size, verify=True, policy=policy)

        t = _best(run_resume, repeat)
        out["resume_half_s"] = round(t, 3)
        out["resume_overhead"] = round(t / float(out["vggtctl_sha256_s"]) - 1.0, 3)  # type: ignore[arg-type]
    return out


def _eth3d_like_archive(tmp: Path, extract_mb: int) -> tuple[Path, int]:
    """A scene folder like a ``_dslr_depth`` + ``_dslr_undistorted`` pair, packed as 7z."""
    import py7zr

    src = tmp / "scene_src" / "scene"
    rng = np.random.default_rng(1)
    h, w = 1000, 1500
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    total, k = 0, 0
    while total < extract_mb * 1_000_000:
        depth = 5.0 + 0.002 * xx + 0.001 * yy + 0.05 * np.sin(xx / 37.0 + k) * np.cos(yy / 23.0)
        holes = rng.random((h // 10, w // 10)) < 0.3
        depth[np.kron(holes, np.ones((10, 10), bool))] = np.inf
        p = src / "ground_truth_depth" / "dslr_images" / f"DSC_{k:04d}.JPG"
        p.parent.mkdir(parents=True, exist_ok=True)
        depth.astype("<f4").tofile(p)
        j = src / "images" / "dslr_images_undistorted" / f"DSC_{k:04d}.JPG"
        j.parent.mkdir(parents=True, exist_ok=True)
        j.write_bytes(rng.bytes(1_500_000))  # JPEG data is incompressible
        total += depth.nbytes + 1_500_000
        k += 1
    archive = tmp / "scene.7z"
    sevenz = shutil.which("7z")
    if sevenz:  # much faster to build; both extractors then read the very same file
        subprocess.run([sevenz, "a", "-t7z", "-m0=lzma2", "-mx=5", str(archive), "scene"], cwd=src.parent,
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    else:
        with py7zr.SevenZipFile(archive, "w") as z:
            z.writeall(src, arcname="scene")
    return archive, total


def bench_extract(tmp: Path, extract_mb: int, repeat: int) -> dict[str, object]:
    archive, total = _eth3d_like_archive(tmp, extract_mb)
    out: dict[str, object] = {"archive_bytes": archive.stat().st_size, "extracted_bytes": total}
    target = tmp / "extract"

    def run_ours() -> None:
        shutil.rmtree(target, ignore_errors=True)
        safe_extract(archive, target)

    t = _best(run_ours, repeat)
    out["vggtctl_s"] = round(t, 3)
    out["vggtctl_MBps"] = round(total / t / 1e6, 1)
    sevenz = shutil.which("7z")
    if sevenz:

        def run_7z() -> None:
            shutil.rmtree(target, ignore_errors=True)
            subprocess.run(
                [sevenz, "x", "-y", f"-o{target}", str(archive)], check=True, stdout=subprocess.DEVNULL
            )

        t7 = _best(run_7z, repeat)
        out["7z_s"] = round(t7, 3)
        out["7z_MBps"] = round(total / t7 / 1e6, 1)
        out["vggtctl_vs_7z"] = round(t7 / t, 3)
    else:
        out["7z"] = "skipped: 7z not installed (apt-get install -y p7zip-full)"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=256, help="HTTP test file size (MB)")
    ap.add_argument("--extract-mb", type=int, default=80, help="extracted size of the 7z test archive (MB)")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions (best is reported)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vggtctl_bench_dl_") as d:
        tmp = Path(d)
        http = bench_http(tmp, args.size_mb, args.repeat)
        extract = bench_extract(tmp, args.extract_mb, args.repeat)
    result = {"http": http, "extract": extract, "repeat": args.repeat, "peak_rss_mb": round(peak_rss_mb(), 1)}
    path = write_result("download", result)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
