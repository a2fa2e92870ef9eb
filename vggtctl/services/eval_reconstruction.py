"""``vggtctl evaluate --reconstruction CLOUD.ply``: any method's point cloud, scored by ETH3D's protocol.

The cloud is read as-is (ETH3D's program expects it in the scan world frame, metres). Rows with a NaN
or infinite coordinate are dropped and counted; a cloud whose extent is far from the scans' is flagged
as probably in another unit. ``--pc-align points`` first fits a similarity onto the scan points by
Sim(3) ICP (Umeyama on nearest neighbours, scale included), started from the cloud's centroid and RMS
size matched to the scans' — enough for scale, shift and small turns (≲ 1° on the test scene; 3° already
traps point-to-point ICP there), not for a cloud in an arbitrarily rotated frame. Only
``<scene>/dslr_scan_eval/`` is needed.

With ``--eth3d-evaluator PATH`` the official ``ETH3DMultiViewEvaluation`` runs on the same (aligned)
cloud, and its printed completeness/accuracy/F1 are reported beside ours.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from vggtctl.errors import EvaluationError, InputError
from vggtctl.progress import Progress
from vggtctl.services.eval_config import EvalConfig
from vggtctl.services.eval_report import SceneReport
from vggtctl.services.metrics.align import Sim3, icp
from vggtctl.services.metrics.eth3d_protocol import eth3d_metrics

UNIT_RATIO_WARN = 5.0  # extent ratio (either way) beyond which the cloud is flagged as another unit
SIM3_ICP_POINTS = 100_000
EVALUATOR_TIMEOUT_S = 3600


def read_reconstruction(path: Path) -> tuple[np.ndarray, int]:
    """The finite xyz rows of a PLY, and how many rows were dropped for NaN/inf.

    Raises:
        InputError: Unreadable PLY, no x/y/z properties, or no finite point at all.
    """
    from vggtctl.io.ply import read_ply

    if not Path(path).is_file():
        raise InputError(f"reconstruction {path} does not exist", "pass the PLY of a point cloud")
    ply = read_ply(path)
    if "xyz" not in ply:
        raise InputError(
            f"{path}: PLY has no x, y, z vertex properties (has: {', '.join(k for k in ply) or 'none'})",
            "export the cloud's vertices as x, y, z floats",
        )
    xyz = np.asarray(ply["xyz"], dtype=np.float64).reshape(-1, 3)
    finite = np.isfinite(xyz).all(axis=1)
    if not finite.any():
        raise InputError(
            f"{path}: holds no finite point ({len(xyz)} vertices)", "is the cloud empty or all NaN?"
        )
    return xyz[finite], int((~finite).sum())


def _extent(points: np.ndarray) -> float:
    """Diagonal of the 1-99 % percentile box (robust to a few far outliers)."""
    lo, hi = np.percentile(points, [1, 99], axis=0)
    return float(np.linalg.norm(hi - lo))


def _sim3_icp(cloud: np.ndarray, scan_world: np.ndarray, config: EvalConfig) -> tuple[Sim3, dict[str, Any]]:
    """Centroid + RMS-size initialisation, then Sim(3) ICP onto the scan points."""
    rng = np.random.default_rng(config.seed)
    sub = (
        cloud
        if len(cloud) <= SIM3_ICP_POINTS
        else cloud[rng.choice(len(cloud), SIM3_ICP_POINTS, replace=False)]
    )
    c_src, c_dst = sub.mean(axis=0), scan_world.mean(axis=0)
    rms_src = np.sqrt(((sub - c_src) ** 2).sum(axis=1).mean())
    rms_dst = np.sqrt(((scan_world - c_dst) ** 2).sum(axis=1).mean())
    if not rms_src > 0:
        raise EvaluationError("the reconstruction is a single point: no similarity can be fitted")
    s = float(rms_dst / rms_src)
    init = Sim3(s, np.eye(3), c_dst - s * c_src)
    # The first passes need a wide gate (the initial guess is coarse), the last the usual ICP one.
    total = init
    fits = []
    for gate in (
        max(config.icp_threshold, 0.2 * rms_dst),
        max(config.icp_threshold, 0.05 * rms_dst),
        config.icp_threshold,
    ):
        res = icp(total.apply(sub), scan_world, max_distance=gate, with_scale=True)
        total = res.transform.compose(total)
        fits.append(
            {
                "threshold": gate,
                "iterations": res.iterations,
                "fitness": res.fitness,
                "inlier_rmse": res.inlier_rmse,
            }
        )
    info = {"method": "sim3-icp-on-scan-points", "sim3": total.to_dict(), "init": init.to_dict(), "icp": fits}
    return total, info


def score_reconstruction(
    scene_dir: Path, config: EvalConfig, sr: SceneReport, progress: Progress
) -> np.ndarray:
    """Score ``config.reconstruction`` against the scene's scans into ``sr``; returns the scored cloud."""
    from vggtctl.data.eth3d import read_scans

    assert config.reconstruction is not None
    progress.log(f"{scene_dir.name}: loading laser scans")
    scans = read_scans(scene_dir)
    progress.log(f"reading {config.reconstruction}")
    cloud, dropped = read_reconstruction(Path(config.reconstruction))
    if dropped:
        sr.warnings.append(f"{dropped} reconstruction point(s) with NaN/inf coordinates dropped")
    world = np.concatenate([s.world_points() for s in scans]).astype(np.float64)
    ratio = _extent(cloud) / max(_extent(world), 1e-12)
    info: dict[str, Any] = {
        "method": "none",
        "reconstruction": str(config.reconstruction),
        "points_read": int(len(cloud) + dropped),
        "points_dropped_nonfinite": dropped,
        "extent_ratio_to_scans": ratio,
    }
    if not 1 / UNIT_RATIO_WARN <= ratio <= UNIT_RATIO_WARN and config.pc_align == "none":
        sr.warnings.append(
            f"the reconstruction spans {ratio:.3g}x the scans' extent: another unit (mm? cm?) or frame? "
            "ETH3D expects metres in the scan frame (or use --pc-align points)"
        )
    if config.pc_align == "points":
        progress.log("fitting a Sim(3) onto the scans (ICP with scale)")
        sim, fit = _sim3_icp(cloud, world, config)
        cloud = sim.apply(cloud)
        info.update(fit)
        last = fit["icp"][-1]
        if last["fitness"] < 0.3:
            sr.warnings.append(
                f"the Sim(3) ICP matched only {last['fitness']:.0%} of the points within "
                f"{last['threshold']} m: the alignment may be wrong (is the cloud roughly oriented?)"
            )
    sr.pointcloud_alignment = info
    progress.log(f"ETH3D protocol: {len(cloud)} points vs {len(world)} scan points")
    sr.pointcloud = eth3d_metrics(scans, cloud, tuple(config.tolerances))
    if config.eth3d_evaluator is not None:
        sr.pointcloud.extra["official_program"] = run_official_evaluator(
            Path(config.eth3d_evaluator), scene_dir, cloud, config, progress
        )
    return cloud


def parse_official_output(text: str) -> dict[str, list[float]]:
    """The ``Tolerances:``/``Completenesses:``/``Accuracies:``/``F1-scores:`` lines of the program.

    Raises:
        EvaluationError: A line is missing.
    """
    keys = {
        "Tolerances": "tolerances",
        "Completenesses": "completeness",
        "Accuracies": "accuracy",
        "F1-scores": "f1",
    }
    out: dict[str, list[float]] = {}
    for line in text.splitlines():
        head, _, rest = line.partition(":")
        if head.strip() in keys:
            out[keys[head.strip()]] = [float(v) for v in rest.split()]
    missing = [v for v in keys.values() if v not in out]
    if missing:
        raise EvaluationError(
            f"the ETH3D evaluator printed no {', '.join(missing)} line(s)",
            "run it by hand on the same files to see what it says",
        )
    return out


def run_official_evaluator(
    binary: Path, scene_dir: Path, cloud: np.ndarray, config: EvalConfig, progress: Progress
) -> dict[str, Any]:
    """Run ETH3D's ``ETH3DMultiViewEvaluation`` on ``cloud`` (written to a temporary PLY)."""
    from vggtctl.data.eth3d import SCAN_ALIGNMENT, SCAN_DIR
    from vggtctl.io.ply import write_ply

    if not binary.is_file():
        raise InputError(
            f"ETH3D evaluator {binary} does not exist", "build github.com/ETH3D/multi-view-evaluation"
        )
    mlp = scene_dir / SCAN_DIR / SCAN_ALIGNMENT
    with tempfile.TemporaryDirectory(prefix="vggtctl-eth3d-") as tmp:
        ply = Path(tmp) / "reconstruction.ply"
        write_ply(ply, np.asarray(cloud, dtype=np.float32))
        cmd = [
            str(binary),
            "--reconstruction_ply_path", str(ply),
            "--ground_truth_mlp_path", str(mlp),
            "--tolerances", ",".join(f"{t:g}" for t in config.tolerances),
        ]  # fmt: skip
        progress.log(f"running {binary.name}")
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=EVALUATOR_TIMEOUT_S, check=False
            )
        except OSError as e:
            raise InputError(
                f"cannot run {binary}: {e.strerror}", "is it an executable ETH3D evaluator?"
            ) from e
        except subprocess.TimeoutExpired:
            raise EvaluationError(f"{binary} ran over {EVALUATOR_TIMEOUT_S} s", "run it by hand") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise EvaluationError(
            f"{binary} exited with {done.returncode}: {tail[0]}", "run it by hand on the same files"
        )
    return {"binary": str(binary), **parse_official_output(done.stdout)}
