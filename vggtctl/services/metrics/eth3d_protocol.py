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

Speed: the program walks a spherical grid of each scan's points per reconstruction point; here each scan
is a ``cKDTree`` of unit ray directions queried for all points at once (k nearest rays within the
beam's angular radius, the rare saturated queries redone as ball queries), the in-beam test is then
applied to every candidate pair in float32, and the voxel cells are hashed with ``np.unique``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from vggtctl.errors import EvaluationError

ETH3D_TOLERANCES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)  # metres, the benchmark's
ETH3D_VOXEL_SIZE = 0.01
BEAM_START_RADIUS = 0.5 * 0.00225  # metres (the program's default)
BEAM_DIVERGENCE_DEG = 0.011  # half-angle, degrees (the program's default)
_GRID_SHIFTS = (0.0, 0.5)  # the two voxel grids, shifted by half a voxel in x, y and z
_K_RAYS = 8  # rays fetched per point in the bulk query; more are fetched only where all 8 fit


@dataclass
class Eth3dScan:
    """One laser scan: its points in the scanner's own frame and where that frame sits in the world.

    Attributes:
        points: ``[N, 3]`` float32 scanner-local points (scanner at the origin, z up).
        global_T_mesh: ``[4, 4]`` world ← scan transform (MeshLab ``MLMatrix44``).
        name: The scan's file name, for messages.
    """

    points: np.ndarray
    global_T_mesh: np.ndarray
    name: str = "scan"

    def world_points(self) -> np.ndarray:
        """The points in world coordinates, float32 (as the program transforms them)."""
        return _affine(np.asarray(self.global_T_mesh, dtype=np.float32), self.points)


def _affine(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``m[:3, :3] @ p + m[:3, 3]`` in float32, summed as PCL's SSE transform does.

    The order of the float32 additions (``m0·x + (m1·y + (m2·z + t))``) decides which side of a voxel
    boundary a point on a grid-aligned surface lands, so it is kept, and no BLAS (with its fused
    multiply-adds) is used.
    """
    p = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    out = np.empty_like(p)
    for r in range(3):
        out[:, r] = m[r, 0] * x + (m[r, 1] * y + (m[r, 2] * z + m[r, 3]))
    return out


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


def _cells(points: np.ndarray, voxel_size: float, shift: float) -> np.ndarray:
    """Index of each point's voxel cell in one grid (``[N]``, 0..cells-1), as the program floors it."""
    inv = np.float32(1.0 / voxel_size)
    v = np.floor(points.astype(np.float32) * inv + np.float32(shift)).astype(np.int64)
    v -= v.min(axis=0)
    dims = v.max(axis=0) + 1
    if float(np.prod(dims.astype(np.float64))) < 2**62:
        key = (v[:, 0] * dims[1] + v[:, 1]) * dims[2] + v[:, 2]
        return np.unique(key, return_inverse=True)[1].ravel()
    return np.unique(v, axis=0, return_inverse=True)[1].ravel()


def _dot3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise float32 dot products summed as Eigen's unrolled 3-vector reduction: a0b0 + (a1b1 + a2b2).

    The program's in-beam test subtracts nearly equal float32 numbers (a point's offset from a ray
    ~10 m away, against a ~3 mm beam), so the rounding of each step is reproduced, not improved on.
    """
    return a[:, 0] * b[:, 0] + (a[:, 1] * b[:, 1] + a[:, 2] * b[:, 2])


def _cell_counts(
    cell: np.ndarray, first: np.ndarray, nt: int, cells: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Points per cell ``[M]`` and, per cell and tolerance, those with ``first <= t`` ``[M, nt]``
    (one bincount over cell × first-index instead of one per tolerance)."""
    m = int(cell.max()) + 1 if cells is None else cells
    if len(cell) == 0:
        return np.zeros(m, np.int64), np.zeros((m, nt), np.int64)
    hist = np.bincount(cell * (nt + 1) + first, minlength=m * (nt + 1)).reshape(m, nt + 1)
    return hist.sum(axis=1), np.cumsum(hist[:, :nt], axis=1)


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
    scan = np.concatenate([s.world_points() for s in scans]) if scans else np.zeros((0, 3), np.float32)
    n = len(scan)
    if n == 0:
        raise EvaluationError("the scans hold no point", "check the scene's dslr_scan_eval/ PLY files")
    recon = np.asarray(reconstruction, dtype=np.float32).reshape(-1, 3)
    if len(recon) == 0:
        return [0.0] * len(tol2), [0] * len(tol2), n
    bound = float(np.sqrt(tol2[-1])) * (1 + 1e-6)
    d, _ = cKDTree(recon).query(scan, k=1, distance_upper_bound=bound, workers=workers)
    first = np.full(n, len(tol2))
    hit = np.isfinite(d)
    first[hit] = _first_index((d[hit] ** 2), tol2)
    total = np.zeros(len(tol2))
    cell_count = 0
    for shift in _GRID_SHIFTS:
        count, complete = _cell_counts(_cells(scan, voxel_size, shift), first, len(tol2))
        cell_count += len(count)
        total += np.sum(complete / count[:, None], axis=0)
    values = [float(np.float32(s / cell_count)) for s in total]
    return values, [int(np.sum(first <= t)) for t in range(len(tol2))], n


def _candidate_pairs(
    tree: cKDTree, n_rays: int, dirs: np.ndarray, radius: np.ndarray, workers: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every (point, ray) pair whose unit directions are within the point's chord radius.

    Most points lie in no beam at all (beams are millimetres wide, rays centimetres apart), so one
    nearest-ray query settles them; only points with a ray in reach fetch their k nearest rays, and
    the few with all k in reach a full ball query.
    """
    if len(dirs) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    bound = float(radius.max())
    d1, _ = tree.query(dirs, k=1, distance_upper_bound=bound, workers=workers)
    near = np.nonzero(d1 <= radius)[0]
    k = min(_K_RAYS, n_rays)
    dist, idx = tree.query(dirs[near], k=k, distance_upper_bound=bound, workers=workers)
    dist, idx = dist.reshape(len(near), k), idx.reshape(len(near), k)
    ok = dist <= radius[near, None]
    rows, cols = np.nonzero(ok)
    pts, rays = [near[rows]], [idx[rows, cols]]
    if k < n_rays:
        full = near[np.nonzero(ok[:, -1])[0]]  # all k rays in reach: there may be more
        if len(full):
            lists = tree.query_ball_point(dirs[full], radius[full], workers=workers)
            lens = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(full))
            pts.append(np.repeat(full, lens))
            rays.append(np.fromiter((j for x in lists for j in x), dtype=np.int64, count=int(lens.sum())))
    return np.concatenate(pts), np.concatenate(rays)


def classify(
    scans: list[Eth3dScan],
    reconstruction: np.ndarray,
    tolerances: tuple[float, ...] = ETH3D_TOLERANCES,
    beam_start_radius: float = BEAM_START_RADIUS,
    beam_divergence_deg: float = BEAM_DIVERGENCE_DEG,
    workers: int = -1,
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
        todo = np.nonzero(first > 0)[0]  # accurate at the smallest tolerance: nothing left to learn
        x = recon[todo]
        p = np.stack([_dot3(x, r_t[r][None]) + t_inv[r] for r in range(3)], axis=1)
        rp = np.sqrt(_dot3(p, p))
        beam = start + rp * tan_div
        with np.errstate(divide="ignore", invalid="ignore"):
            sin_a = np.where(rp > 0, beam / rp, 2.0)
            dirs = np.where(rp[:, None] > 0, p / rp[:, None], 0.0).astype(np.float64)
        # chord between unit directions at the beam's angular radius (everything when the beam is wider)
        alpha = np.arcsin(np.minimum(sin_a, 1.0).astype(np.float64))
        chord = np.where(sin_a >= 1, 2.0, 2 * np.sin(alpha / 2)) * (1 + 1e-4) + 1e-6
        tree = cKDTree(dq.astype(np.float64))
        i, j = _candidate_pairs(tree, len(dq), dirs, chord, workers)
        pi, dj = p[i], dq[j]
        along = _dot3(dj, pi)
        off = pi - along[:, None] * dj
        in_beam = (along >= 0) & (_dot3(off, off) <= beam[i] * beam[i])
        i, j, pi, along = i[in_beam], j[in_beam], pi[in_beam], along[in_beam]
        diff = q[j] - pi
        idx = _first_index(_dot3(diff, diff), tol2)
        np.minimum.at(first, todo[i], idx)
        inaccurate[todo[i[along < rq[j]]]] = True
    return first, inaccurate


def accuracy(
    scans: list[Eth3dScan],
    reconstruction: np.ndarray,
    tolerances: tuple[float, ...] = ETH3D_TOLERANCES,
    voxel_size: float = ETH3D_VOXEL_SIZE,
    beam_start_radius: float = BEAM_START_RADIUS,
    beam_divergence_deg: float = BEAM_DIVERGENCE_DEG,
    workers: int = -1,
) -> tuple[list[float], list[int], list[int]]:
    """Official accuracy per tolerance, with the observed and accurate point counts per tolerance."""
    recon = np.asarray(reconstruction, dtype=np.float32).reshape(-1, 3)
    nt = len(tolerances)
    if len(recon) == 0:
        return [0.0] * nt, [0] * nt, [0] * nt
    first, inacc = classify(scans, recon, tolerances, beam_start_radius, beam_divergence_deg, workers)
    total = np.zeros(nt)
    valid_cells = np.zeros(nt, dtype=np.int64)
    for shift in _GRID_SHIFTS:
        cell = _cells(recon, voxel_size, shift)
        _, acc = _cell_counts(cell, first, nt)
        m = len(acc)
        # inaccurate at t: flagged and not accurate at t (first > t)
        flagged, flagged_acc = _cell_counts(cell[inacc], first[inacc], nt, m)
        bad = flagged[:, None] - flagged_acc
        seen = acc + bad
        valid = seen > 0
        ratio = np.where(valid, acc / np.maximum(seen, 1), 0.0).astype(np.float32)
        total += np.sum(ratio, axis=0, dtype=np.float64)
        valid_cells += valid.sum(axis=0)
    values = [float(np.float32(s / c)) if c else 0.0 for s, c in zip(total, valid_cells, strict=True)]
    observed = [int(np.sum((first <= t) | inacc)) for t in range(nt)]
    accurate = [int(np.sum(first <= t)) for t in range(nt)]
    return values, observed, accurate


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
        workers: Threads for the k-d tree queries (-1: all cores).

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
    comp, complete, n_scan = completeness(scans, recon, tolerances, voxel_size, workers)
    acc, observed, accurate = accuracy(
        scans, recon, tolerances, voxel_size, beam_start_radius, beam_divergence_deg, workers
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
