"""The float-vs-quantized comparison: sizes, peak memory, latency, output error, GT metrics.

Both models run on the same held-out frames, in the same process, with the same thread count.
Latency is the median of ``repeats`` timed forwards after one untimed warm-up. Peak memory comes
two ways: ``own_process`` (the figure to read) is each model's load + one forward in a child process
of its own (:mod:`.peak`, its ``ru_maxrss``), so the float model never inflates the quantized one's;
``peak_load_bytes``/``peak_run_bytes`` are the comparing process's resident high-water mark (Linux
``VmHWM``, reset through ``/proc/self/clear_refs``) in each phase, which includes whatever the
process held before (None where the kernel offers no reset).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from vggtctl.progress import NULL_PROGRESS, Progress
from vggtctl.utils.procfs import status_bytes

from .peak import child_peak

# ---------------------------------------------------------------- memory


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@contextmanager
def peak_rss() -> Iterator[dict[str, int | None]]:
    """``{"peak_bytes": ...}`` filled at exit with the resident high-water mark inside the block."""
    out: dict[str, int | None] = {"peak_bytes": None}
    ok = _reset_hwm()
    try:
        yield out
    finally:
        out["peak_bytes"] = status_bytes("VmHWM") if ok else None


# ---------------------------------------------------------------- output error


def rotation_deg(r_a: np.ndarray, r_b: np.ndarray) -> np.ndarray:
    """Geodesic angle (degrees) between rotation matrices ``[..., 3, 3]``."""
    rel = np.einsum("...ji,...jk->...ik", r_a, r_b)
    cos = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def output_errors(ref: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> dict[str, float]:
    """How far ``test`` (quantized) is from ``ref`` (float) on the same frames.

    depth AbsRel = mean(|d_q - d_f| / d_f) over pixels with d_f > 0; rotation/FoV in degrees per
    frame (mean and max); translation = mean L2 of the camera translations' difference; point map
    = mean L2 of the point difference over the mean point norm; confidence = Pearson correlation
    of the depth confidences.
    """
    out: dict[str, float] = {}
    if "depth" in ref and "depth" in test:
        d_f, d_q = ref["depth"].astype(np.float64), test["depth"].astype(np.float64)
        valid = d_f > 0
        out["depth_absrel"] = float(np.mean(np.abs(d_q[valid] - d_f[valid]) / d_f[valid]))
    if "depth_conf" in ref and "depth_conf" in test:
        a, b = ref["depth_conf"].ravel().astype(np.float64), test["depth_conf"].ravel().astype(np.float64)
        out["depth_conf_corr"] = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 1.0
    if "extrinsic" in ref and "extrinsic" in test:
        rot = rotation_deg(
            ref["extrinsic"][:, :3, :3].astype(np.float64), test["extrinsic"][:, :3, :3].astype(np.float64)
        )
        out["rotation_deg_mean"] = float(rot.mean())
        out["rotation_deg_max"] = float(rot.max())
        dt = np.linalg.norm(ref["extrinsic"][:, :3, 3] - test["extrinsic"][:, :3, 3], axis=-1)
        out["translation_l2_mean"] = float(dt.mean())
    if "pose_enc" in ref and "pose_enc" in test:
        fov = np.degrees(np.abs(ref["pose_enc"][:, 7:9].astype(np.float64) - test["pose_enc"][:, 7:9]))
        out["fov_deg_mean"] = float(fov.mean())
        out["fov_deg_max"] = float(fov.max())
    if "world_points" in ref and "world_points" in test:
        p_f, p_q = ref["world_points"].astype(np.float64), test["world_points"].astype(np.float64)
        scale = float(np.linalg.norm(p_f, axis=-1).mean()) or 1.0
        out["point_map_rel"] = float(np.linalg.norm(p_q - p_f, axis=-1).mean() / scale)
    return out


# ---------------------------------------------------------------- measuring one model


def measure_model(
    load: Callable[[], Any], images: np.ndarray, device: str, repeats: int
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Load with ``load()``, run ``images`` ``1 + repeats`` times; timings, memory and the outputs."""
    import torch

    from vggtctl.services.infer import predict

    with peak_rss() as load_mem:
        t0 = time.perf_counter()
        model = load()
        load_s = time.perf_counter() - t0
    x = torch.from_numpy(images)
    times: list[float] = []
    with peak_rss() as run_mem:
        preds = predict(model, x, device=device)
        for _ in range(repeats):
            t0 = time.perf_counter()
            predict(model, x, device=device)
            times.append(time.perf_counter() - t0)
    stats = {
        "load_s": load_s,
        "latency_s_median": statistics.median(times),
        "latency_s_all": times,
        "peak_load_bytes": load_mem["peak_bytes"],
        "peak_run_bytes": run_mem["peak_bytes"],
        "threads": torch.get_num_threads(),
    }
    del model
    return stats, preds


def _gt_metrics(data: Path, model: str, frames: int, device: str) -> dict[str, Any]:
    from vggtctl.services.eval_config import EvalConfig
    from vggtctl.services.evaluate import evaluate

    report = evaluate(EvalConfig(data=data, model=model, frames=frames, device=device, dtype="fp32"))
    mean = report.mean()
    return {"depth": mean.get("depth"), "camera": mean.get("camera"), "scenes": len(report.scenes)}


def compare(
    float_source: str,
    artifact: Path,
    images: np.ndarray,
    *,
    float_file: Path,
    device: str = "cpu",
    repeats: int = 3,
    eval_data: Path | None = None,
    eval_frames: int = 4,
    progress: Progress = NULL_PROGRESS,
) -> dict[str, Any]:
    """The comparison of ``float_source`` and the artifact folder on ``images`` (``[S,3,H,W]``)."""
    from vggtctl.services.model_loader import load_model

    from .artifact import WEIGHTS

    progress.log(f"comparing float and quantized on {images.shape[0]} frames ({repeats} timed runs each)")
    f_stats, f_preds = measure_model(lambda: load_model(float_source, device=device), images, device, repeats)
    q_stats, q_preds = measure_model(lambda: load_model(artifact, device=device), images, device, repeats)
    q_file = artifact / WEIGHTS
    with tempfile.TemporaryDirectory(prefix="vggtctl-peak-") as tmp:
        frames = Path(tmp) / "frames.npy"
        np.save(frames, images)
        threads = int(f_stats["threads"])
        f_stats["own_process"] = child_peak(float_source, frames, device, threads)
        q_stats["own_process"] = child_peak(os.fspath(artifact), frames, device, threads)
    report: dict[str, Any] = {
        "frames": int(images.shape[0]),
        "image_hw": [int(images.shape[2]), int(images.shape[3])],
        "device": device,
        "float": {"file": str(float_file), "file_bytes": float_file.stat().st_size, **f_stats},
        "quantized": {"file": str(q_file), "file_bytes": q_file.stat().st_size, **q_stats},
        "error": output_errors(f_preds, q_preds),
    }
    report["size_ratio"] = report["quantized"]["file_bytes"] / report["float"]["file_bytes"]
    report["speedup"] = f_stats["latency_s_median"] / max(q_stats["latency_s_median"], 1e-12)
    if eval_data is not None:
        progress.log(f"evaluating both models against the ground truth in {eval_data}")
        report["ground_truth"] = {
            "data": str(eval_data),
            "float": _gt_metrics(eval_data, float_source, eval_frames, device),
            "quantized": _gt_metrics(eval_data, os.fspath(artifact), eval_frames, device),
        }
    return report
