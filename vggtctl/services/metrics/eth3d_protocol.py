"""ETH3D's official point-cloud completeness, accuracy and F1, reimplemented with numpy/scipy.

The definitions follow ETH3D's evaluation program (github.com/ETH3D/multi-view-evaluation,
``src/completeness.cc``, ``src/accuracy.cc``, ``src/main.cc``); the numbers it printed on the fixtures in
``tests/data/eth3d_official/`` are reproduced to 1e-3 by ``tests/test_eth3d_protocol.py``.

* **Completeness** (scans → reconstruction): the scans are merged in world coordinates; a scan point is
  complete at tolerance t when its nearest reconstruction point is within t (squared distance ≤ t²).
* **Accuracy** (reconstruction → scans), per scan in that scan's own frame, the scanner at its origin: a
  reconstruction point lies in the *beam* of a scan point when its distance to that scan point's ray is
  at most ``beam_start_radius + |p| · tan(beam_divergence)`` (|p| the point's distance from the scanner)
  and it is not behind the scanner. Among the beams holding it, it is *accurate* at t when within t of
  one beam's scan point; otherwise *inaccurate* when it lies in front of one beam's scan point (free
  space the laser crossed); otherwise *unobserved* (outside every beam, or only behind scan points).
  Across scans: accurate for any scan wins, then inaccurate for any, else unobserved.
* Both ratios are averaged over the occupied cells of two voxel grids of ``voxel_size`` (the second
  shifted by half a voxel): completeness over every cell holding a scan point (complete / points),
  accuracy over every cell holding an observed point (accurate / (accurate + inaccurate)). Unobserved
  points do not count.
* **F1** = 2·accuracy·completeness / (accuracy + completeness).
* Coordinates, distances and ratios are float32 where the program uses ``float``; the per-cell sums
  are float64 as there.

Speed: as the program does, each scan's rays are binned on a spherical (inclination × azimuth) grid;
a compiled kernel (``eth3d_beams``, numba) moves each reconstruction point into the scan's frame and
tests the rays of the cells its beam cone reaches (one or two for almost every point), in float32 in
the program's order of operations. The voxel averaging is compiled too (``eth3d_cells``: a hash table
per partition of the points, no sort). Completeness is an unbalanced k-d tree over the reconstruction;
it runs on a second thread beside accuracy. The grid, the tree and the query order only decide which
pairs are tried, never a number: the kernels give the numbers the vectorised numpy form gave, bit for
bit (checked on the benchmark scene and the official fixtures when they replaced it).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from vggtctl.data.eth3d_scan import Eth3dScan
from vggtctl.errors import EvaluationError
from vggtctl.services.metrics.eth3d_beams import beam_test_scan
from vggtctl.services.metrics.eth3d_cells import counting_order, spatial_order, voxel_ratio_sums

ETH3D_TOLERANCES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)  # metres, the benchmark's
ETH3D_VOXEL_SIZE = 0.01
BEAM_START_RADIUS = 0.5 * 0.00225  # metres (the program's default)
BEAM_DIVERGENCE_DEG = 0.011  # half-angle, degrees (the program's default)
_GRID_SHIFTS = (0.0, 0.5)  # the two voxel grids, shifted by half a voxel in x, y and z


@dataclass
class Eth3dResult:
    """Official ETH3D metrics of one reconstruction, lists in tolerance order."""

    tolerances: list[float]
    completeness: list[float]
    accuracy: list[float]
    f1: list[float]
    scan_points: int
    complete_points: list[int]
    reconstruction_points: int
    observed_points: list[int]
    accurate_points: list[int]
    voxel_size: float
    beam_start_radius: float
    beam_divergence_deg: float
    extra: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "protocol": "eth3d-official",
            "tolerances": self.tolerances,
            "completeness": self.completeness,
            "accuracy": self.accuracy,
            "f1": self.f1,
            "scan_points": self.scan_points,
            "complete_points": self.complete_points,
            "reconstruction_points": self.reconstruction_points,
            "observed_points": self.observed_points,
            "accurate_points": self.accurate_points,
            "unobserved_points": [self.reconstruction_points - n for n in self.observed_points],
            "voxel_size": self.voxel_size,
            "beam_start_radius": self.beam_start_radius,
            "beam_divergence_deg": self.beam_divergence_deg,
            **self.extra,
        }


def check_tolerances(tolerances: tuple[float, ...] | list[float]) -> list[str]:
    """Reasons a tolerance list is unusable (empty: fine): non-finite, non-positive, unsorted, repeated."""
    tol = list(tolerances)
    if not tol:
        return ["give at least one tolerance"]
    reasons = []
    if not all(math.isfinite(t) and t > 0 for t in tol):
        reasons.append("every tolerance must be a positive number of metres")
    elif any(b <= a for a, b in zip(tol, tol[1:], strict=False)):
        reasons.append("list them in increasing order without repeats, e.g. 0.01,0.02,0.05")
    return reasons


def _cell_means(
    points: np.ndarray,
    voxel_size: float,
    first: np.ndarray,
    seen_from: np.ndarray,
    nt: int,
    ratio_float32: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Over the cells of both voxel grids, per tolerance t: the sum of each cell's (points with
    ``first <= t``) / (points with ``seen_from <= t``) over the cells holding a point seen at t, and the
    number of such cells (see ``eth3d_cells.voxel_ratio_sums``)."""
    pts = np.ascontiguousarray(points, dtype=np.float32)
    inv = np.float32(1.0 / voxel_size)
    sums = np.zeros(nt)
    counted = np.zeros(nt, dtype=np.int64)
    for shift in _GRID_SHIFTS:
        voxel_ratio_sums(pts, inv, np.float32(shift), first, seen_from, nt, ratio_float32, sums, counted)
    return sums, counted


def _dot3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise float32 dot products summed as Eigen's unrolled 3-vector reduction: a0b0 + (a1b1 + a2b2).

    The program's in-beam test subtracts nearly equal float32 numbers (a point's offset from a ray
    ~10 m away, against a ~3 mm beam), so the rounding of each step is reproduced, not improved on.
    """
    return a[:, 0] * b[:, 0] + (a[:, 1] * b[:, 1] + a[:, 2] * b[:, 2])


def _first_index(d2: np.ndarray, tol2: np.ndarray) -> np.ndarray:
    """Smallest tolerance index with ``d2 <= tol²`` (len(tol2) when none), float32 comparison."""
    return np.searchsorted(tol2, d2.astype(np.float32), side="left")


def completeness(
    scans: list[Eth3dScan],
    reconstruction: np.ndarray,
    tolerances: tuple[float, ...] = ETH3D_TOLERANCES,
    voxel_size: float = ETH3D_VOXEL_SIZE,
    workers: int = -1,
) -> tuple[list[float], list[int], int]:
    """Official completeness per tolerance, the complete scan points per tolerance, and the scan points."""
    tol2 = np.asarray(tolerances, dtype=np.float32) ** 2
    nt = len(tol2)
    scan = np.concatenate([s.world_points() for s in scans]) if scans else np.zeros((0, 3), np.float32)
    n = len(scan)
    if n == 0:
        raise EvaluationError("the scans hold no point", "check the scene's dslr_scan_eval/ PLY files")
    recon = np.asarray(reconstruction, dtype=np.float32).reshape(-1, 3)
    if len(recon) == 0:
        return [0.0] * nt, [0] * nt, n
    bound = float(np.sqrt(tol2[-1])) * (1 + 1e-6)
    scan = scan[spatial_order(scan)]  # queries near each other visit the same tree nodes
    d, _ = _tree(recon).query(scan, k=1, distance_upper_bound=bound, workers=workers)
    first = np.full(n, nt)
    hit = np.isfinite(d)
    first[hit] = _first_index((d[hit] ** 2), tol2)
    # every scan point counts: each occupied cell is in the mean at every tolerance
    total, cell_count = _cell_means(scan, voxel_size, first, np.zeros(n, dtype=np.int64), nt, False)
    values = [float(np.float32(s / c)) for s, c in zip(total, cell_count, strict=True)]
    done = np.cumsum(np.bincount(first, minlength=nt + 1))[:nt]
    return values, [int(c) for c in done], n


def _tree(points: np.ndarray) -> cKDTree:
    """A k-d tree built for one bulk query: unbalanced, uncompacted nodes (2-3x faster to build here,
    and the queries are no slower); distances are the same as any other tree's."""
    return cKDTree(points.astype(np.float64), leafsize=32, balanced_tree=False, compact_nodes=False)


class _RayGrid:
    """A scan's rays binned by inclination and azimuth (the program's spherical grid), sorted by cell,
    for finding every ray within a small angle of a direction without a k-d tree.

    The cell size follows the ray count (about one ray per cell where the scan is dense); only which
    rays are *tried* depends on it, the in-beam test itself decides.
    """

    def __init__(self, dirs: np.ndarray) -> None:
        # ~2 cells per ray spacing on a scan covering half the sphere; only the rows the rays span are kept
        n_inc = int(np.clip(round(2.5 * math.sqrt(len(dirs))), 8, 2048))
        n_az = 2 * n_inc
        h_inc, h_az = math.pi / n_inc, 2 * math.pi / n_az
        inc, az = _directions(dirs[:, 0], dirs[:, 1], dirs[:, 2])
        row = np.clip(np.floor(inc / h_inc).astype(np.int64), 0, n_inc - 1)
        row0, row1 = int(row.min()), int(row.max())
        col = np.floor((az + math.pi) / h_az).astype(np.int64) % n_az
        cell = (row - row0) * n_az + col
        self.order, self.offsets = counting_order(cell, (row1 - row0 + 1) * n_az)
        self.params = np.array([n_inc, n_az, h_inc, h_az, row0, row1], dtype=np.float64)


def _directions(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inclination from +z (0..pi) and azimuth (-pi..pi) of vectors, float64."""
    x, y, z = (np.asarray(c, dtype=np.float64) for c in (x, y, z))
    inc = np.arctan2(np.hypot(x, y), z)  # well conditioned everywhere, unlike arccos(z / r) near the poles
    return inc, np.arctan2(y, x)


def classify(
    scans: list[Eth3dScan],
    reconstruction: np.ndarray,
    tolerances: tuple[float, ...] = ETH3D_TOLERANCES,
    beam_start_radius: float = BEAM_START_RADIUS,
    beam_divergence_deg: float = BEAM_DIVERGENCE_DEG,
) -> tuple[np.ndarray, np.ndarray]:
    """Per reconstruction point: the first tolerance index it is accurate at (len(tolerances) when
    none) and whether some beam saw free space at it (inaccurate below that index; else unobserved)."""
    tol2 = np.asarray(tolerances, dtype=np.float32) ** 2
    recon = np.asarray(reconstruction, dtype=np.float32).reshape(-1, 3)
    first = np.full(len(recon), len(tol2), dtype=np.int64)
    inaccurate = np.zeros(len(recon), dtype=bool)
    start = np.float32(beam_start_radius)
    tan_div = np.float32(math.tan(math.radians(beam_divergence_deg)))
    for scan in scans:
        q = np.asarray(scan.points, dtype=np.float32).reshape(-1, 3)
        rq = np.sqrt(_dot3(q, q))
        keep = rq > 0
        q, rq = q[keep], rq[keep]
        if len(q) == 0:
            continue
        dq = q / rq[:, None]
        m = np.asarray(scan.global_T_mesh, dtype=np.float32)
        r_t = np.ascontiguousarray(m[:3, :3].T)
        t_neg = -m[:3, 3]
        t_inv = np.array([_dot3(r_t[r][None], t_neg[None])[0] for r in range(3)], dtype=np.float32)
        grid = _RayGrid(dq)
        o = grid.order
        beam_test_scan(
            recon, r_t, t_inv, q[o], rq[o], dq[o], grid.offsets, grid.params,
            start, tan_div, tol2, first, inaccurate,
        )  # fmt: skip
    return first, inaccurate


def accuracy(
    scans: list[Eth3dScan],
    reconstruction: np.ndarray,
    tolerances: tuple[float, ...] = ETH3D_TOLERANCES,
    voxel_size: float = ETH3D_VOXEL_SIZE,
    beam_start_radius: float = BEAM_START_RADIUS,
    beam_divergence_deg: float = BEAM_DIVERGENCE_DEG,
) -> tuple[list[float], list[int], list[int]]:
    """Official accuracy per tolerance, with the observed and accurate point counts per tolerance."""
    recon = np.asarray(reconstruction, dtype=np.float32).reshape(-1, 3)
    nt = len(tolerances)
    if len(recon) == 0:
        return [0.0] * nt, [0] * nt, [0] * nt
    first, inacc = classify(scans, recon, tolerances, beam_start_radius, beam_divergence_deg)
    # seen (accurate or inaccurate) from tolerance 0 when flagged, else from where it is accurate
    seen_from = np.where(inacc, 0, first)
    total, valid_cells = _cell_means(recon, voxel_size, first, seen_from, nt, ratio_float32=True)
    values = [float(np.float32(s / c)) if c else 0.0 for s, c in zip(total, valid_cells, strict=True)]
    observed = np.cumsum(np.bincount(seen_from, minlength=nt + 1))[:nt]
    accurate = np.cumsum(np.bincount(first, minlength=nt + 1))[:nt]
    return values, [int(c) for c in observed], [int(c) for c in accurate]


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


_heap_lock = threading.Lock()
_heap_users = 0  # metric calls running now: the thresholds are process-wide, the last one restores them


@contextlib.contextmanager
def _reuse_freed_memory() -> Iterator[None]:
    """Keep freed memory in the heap while the metrics run (glibc only; elsewhere a no-op).

    The metrics make and drop arrays of millions of elements; by default glibc hands each one back to
    the kernel and the next one faults its pages in again. The thresholds are process-wide, so calls
    on several threads share one setting: the first to enter raises them, the last to leave puts them
    back at glibc's own steady state for a process that has freed large blocks (mmap above 32 MiB,
    trim above 64 MiB) and trims the heap.
    """
    global _heap_users
    try:
        libc = ctypes.CDLL(None)
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        yield
        return
    with _heap_lock:
        _heap_users += 1
        if _heap_users == 1:
            mallopt(_M_MMAP_THRESHOLD, 1 << 30)
            mallopt(_M_TRIM_THRESHOLD, 1 << 31)
    try:
        yield
    finally:
        with _heap_lock:
            _heap_users -= 1
            if _heap_users == 0:
                mallopt(_M_MMAP_THRESHOLD, 32 << 20)
                mallopt(_M_TRIM_THRESHOLD, 64 << 20)
                malloc_trim(0)


_kernels_loading: threading.Thread | None = None


def load_kernels_in_background() -> None:
    """Start loading the compiled kernels on a daemon thread (once per process).

    Numba loads each cached kernel on its first call, about 0.3 s in all; a command that reads data
    or runs a model first can hide that by calling this at its start. A metric call made before the
    loading ends simply waits for it (numba compiles and loads under one lock).
    """
    global _kernels_loading
    if _kernels_loading is None:
        _kernels_loading = threading.Thread(target=_load_kernels, name="eth3d-kernels", daemon=True)
        _kernels_loading.start()


def wait_for_kernels() -> None:
    """Block until :func:`load_kernels_in_background`'s loading (if started) has finished."""
    if _kernels_loading is not None:
        _kernels_loading.join()


def _load_kernels() -> None:
    rng = np.random.default_rng(0)
    scan = Eth3dScan(rng.normal(size=(64, 3)).astype(np.float32), np.eye(4))
    recon = rng.normal(size=(64, 3)).astype(np.float32)
    accuracy([scan], recon)
    completeness([scan], recon, workers=1)


def f1_score(accuracy: float, completeness: float) -> float:
    """The program's F1 (float32; 0 when both are 0)."""
    p, r = np.float32(accuracy), np.float32(completeness)
    if p <= 0 and r <= 0:
        return 0.0
    return float(np.float32(2 * (p * r) / (p + r)))


def eth3d_metrics(
    scans: list[Eth3dScan],
    reconstruction: np.ndarray,
    tolerances: tuple[float, ...] = ETH3D_TOLERANCES,
    voxel_size: float = ETH3D_VOXEL_SIZE,
    beam_start_radius: float = BEAM_START_RADIUS,
    beam_divergence_deg: float = BEAM_DIVERGENCE_DEG,
    workers: int = -1,
) -> Eth3dResult:
    """ETH3D's completeness, accuracy and F1 of a reconstruction in the scans' world frame.

    Args:
        scans: The scene's scans, each in its own frame with its world transform.
        reconstruction: ``[N, 3]`` finite points in the world (calibration) frame, metres.
        tolerances: Increasing positive tolerances, metres.
        voxel_size: Edge of the two averaging grids, metres.
        beam_start_radius: Laser beam radius at the scanner, metres.
        beam_divergence_deg: Beam divergence half-angle, degrees.
        workers: Threads for the k-d tree queries (-1: all cores); with 1, completeness and accuracy
            also run one after the other instead of side by side.

    Raises:
        EvaluationError: Bad tolerances or voxel size, or scans without points.
    """
    reasons = check_tolerances(tuple(tolerances))
    if reasons:
        raise EvaluationError(
            f"tolerances {list(tolerances)}: {reasons[0]}", "e.g. --tolerances 0.01,0.02,0.05"
        )
    if not voxel_size > 0:
        raise EvaluationError(f"voxel size {voxel_size} must be > 0", "ETH3D uses 0.01 (metres)")
    recon = np.asarray(reconstruction, dtype=np.float32).reshape(-1, 3)
    with _reuse_freed_memory(), ThreadPoolExecutor(1) as pool:
        # neighbours in space next to each other in memory: the beam test and the k-d tree then find
        # what they look up in cache (2x faster on a cloud in random order; no number depends on it)
        recon = recon[spatial_order(recon)]
        # the two halves share nothing; numpy and the k-d tree release the GIL, so on 2 cores they overlap
        comp_job = (
            pool.submit(completeness, scans, recon, tolerances, voxel_size, workers) if workers != 1 else None
        )
        acc, observed, accurate = accuracy(
            scans, recon, tolerances, voxel_size, beam_start_radius, beam_divergence_deg
        )
        comp, complete, n_scan = (
            comp_job.result() if comp_job else completeness(scans, recon, tolerances, voxel_size, workers)
        )
    return Eth3dResult(
        tolerances=[float(t) for t in tolerances],
        completeness=comp,
        accuracy=acc,
        f1=[f1_score(a, c) for a, c in zip(acc, comp, strict=True)],
        scan_points=n_scan,
        complete_points=complete,
        reconstruction_points=len(recon),
        observed_points=observed,
        accurate_points=accurate,
        voxel_size=float(voxel_size),
        beam_start_radius=float(beam_start_radius),
        beam_divergence_deg=float(beam_divergence_deg),
    )
