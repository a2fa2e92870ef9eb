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
each reconstruction point gathers the rays of the cells its beam cone can reach (one or two cells for
almost every point), and the in-beam test runs on those candidate pairs in float32, vectorised. The
voxel cells are one packed int64 key per point, sorted once per grid, and one reduction serves both
ratios at every tolerance. Completeness is an unbalanced k-d tree over the reconstruction queried in
cell order; it runs on a second thread beside accuracy. The grid, the tree and the query order only
decide which pairs are tried, never a number (checked bit for bit against the former k-d tree version).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from vggtctl.data.eth3d_scan import Eth3dScan
from vggtctl.errors import EvaluationError

ETH3D_TOLERANCES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)  # metres, the benchmark's
ETH3D_VOXEL_SIZE = 0.01
BEAM_START_RADIUS = 0.5 * 0.00225  # metres (the program's default)
BEAM_DIVERGENCE_DEG = 0.011  # half-angle, degrees (the program's default)
_GRID_SHIFTS = (0.0, 0.5)  # the two voxel grids, shifted by half a voxel in x, y and z
_K_RAYS = 8  # rays fetched per point in the bulk query; more are fetched only where all 8 fit


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


class _VoxelGrids:
    """Both voxel grids of one point set: per grid, the points sorted by cell and each cell's run.

    Cells are hashed as one packed int64 key per point (``floor(p / voxel + shift)`` in float32, as the
    program floors it) and sorted once per grid; every tolerance and both ratios then reuse the runs.
    """

    def __init__(self, points: np.ndarray, voxel_size: float) -> None:
        inv = np.float32(1.0 / voxel_size)
        cols = [np.ascontiguousarray(points[:, a], dtype=np.float32) for a in range(3)]
        self.grids: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for shift in _GRID_SHIFTS:
            key = _cell_keys(cols, inv, np.float32(shift))
            order = np.argsort(key)  # the order within a cell does not matter
            ks = key[order]
            starts = np.flatnonzero(np.concatenate(([True], ks[1:] != ks[:-1])))
            counts = np.diff(np.append(starts, len(ks)))
            self.grids.append((order, starts, counts))

    @property
    def first_order(self) -> np.ndarray:
        """The points' order in the first grid (cell by cell: a spatially coherent order)."""
        return self.grids[0][0]

    def cell_count(self) -> int:
        return sum(len(starts) for _, starts, _ in self.grids)

    def mean_sums(
        self, first: np.ndarray, seen_from: np.ndarray | None, nt: int, ratio_float32: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per tolerance t, over the cells of both grids holding a point seen at t: the sum of
        (points with ``first <= t``) / (points with ``seen_from <= t``), and the number of such cells.

        ``seen_from=None``: every point is seen (completeness). The ratio is float64, or rounded to
        float32 as the program's accuracy does; the sums are float64.
        """
        sums = np.zeros(nt)
        cells = np.zeros(nt, dtype=np.int64)
        for order, starts, counts in self.grids:
            f = first[order]
            o = seen_from[order] if seen_from is not None else None
            # cells of one point (most of them, at 1 cm): ratio 1 when accurate, 0 when only seen
            single = counts == 1
            pos = starts[single]
            sums += np.cumsum(np.bincount(f[pos], minlength=nt + 1))[:nt]
            if o is None:
                cells += len(pos)
            else:
                cells += np.cumsum(np.bincount(o[pos], minlength=nt + 1))[:nt]
            multi = ~single
            m2 = int(multi.sum())
            if m2 == 0:
                continue
            in_multi = np.repeat(multi, counts)
            cell = np.repeat(np.arange(m2), counts[multi])
            acc = _cumulative_counts(cell, f[in_multi], nt, m2)
            seen = (
                np.broadcast_to(counts[multi], (nt, m2))
                if o is None
                else _cumulative_counts(cell, o[in_multi], nt, m2)
            )
            for t in range(nt):
                valid = seen[t] > 0
                a, s = acc[t][valid], seen[t][valid]
                if ratio_float32:
                    ratio = a.astype(np.float32) / s.astype(np.float32)
                else:
                    ratio = a / s
                sums[t] += np.sum(ratio, dtype=np.float64)
                cells[t] += len(a)
        return sums, cells


def _cell_keys(cols: list[np.ndarray], inv: np.float32, shift: np.float32) -> np.ndarray:
    """One int64 key per point naming its voxel cell in one grid (the program's float32 floor)."""
    v = [np.floor(c * inv + shift).astype(np.int64) for c in cols]
    lo = [int(a.min()) for a in v]
    dims = [int(a.max()) - m + 1 for a, m in zip(v, lo, strict=True)]
    if float(dims[0]) * dims[1] * dims[2] < 2**62:
        key = v[0] - lo[0]
        key *= dims[1]
        key += v[1] - lo[1]
        key *= dims[2]
        key += v[2] - lo[2]
        return key
    # a cloud too wide for one packed key (far outliers): rank the cells instead
    return np.unique(np.stack(v, axis=1), axis=0, return_inverse=True)[1].ravel()


def _cumulative_counts(cell: np.ndarray, index: np.ndarray, nt: int, cells: int) -> np.ndarray:
    """``[nt, cells]``: per tolerance t and cell, the points with ``index <= t``."""
    hist = np.bincount(index * cells + cell, minlength=(nt + 1) * cells).reshape(nt + 1, cells)
    return np.cumsum(hist[:nt], axis=0)


def _dot3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise float32 dot products summed as Eigen's unrolled 3-vector reduction: a0b0 + (a1b1 + a2b2).

    The program's in-beam test subtracts nearly equal float32 numbers (a point's offset from a ray
    ~10 m away, against a ~3 mm beam), so the rounding of each step is reproduced, not improved on.
    """
    return a[:, 0] * b[:, 0] + (a[:, 1] * b[:, 1] + a[:, 2] * b[:, 2])


def _dot3c(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    """:func:`_dot3` on column arrays (contiguous, so each step is one vector operation)."""
    return a[0] * b[0] + (a[1] * b[1] + a[2] * b[2])


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
    grids = _VoxelGrids(scan, voxel_size)
    order = grids.first_order  # queries in cell order: neighbours in the tree are neighbours in memory
    bound = float(np.sqrt(tol2[-1])) * (1 + 1e-6)
    d, _ = _tree(recon).query(scan[order], k=1, distance_upper_bound=bound, workers=workers)
    first = np.full(n, nt)
    hit = np.isfinite(d)
    first[order[hit]] = _first_index((d[hit] ** 2), tol2)
    total, _ = grids.mean_sums(first, None, nt, ratio_float32=False)
    cell_count = grids.cell_count()
    values = [float(np.float32(s / cell_count)) for s in total]
    done = np.cumsum(np.bincount(first, minlength=nt + 1))[:nt]
    return values, [int(c) for c in done], n


def _tree(points: np.ndarray) -> cKDTree:
    """A k-d tree built for one bulk query: unbalanced, uncompacted nodes (2-3x faster to build here,
    and the queries are no slower); distances are the same as any other tree's."""
    return cKDTree(points.astype(np.float64), leafsize=32, balanced_tree=False, compact_nodes=False)


class _RayGrid:
    """A scan's unit ray directions binned by inclination and azimuth (the program's spherical grid),
    for finding every ray within a small angle of a direction without a k-d tree.

    The cell size follows the ray count (about one ray per cell where the scan is dense); only which
    rays are *tried* depends on it, the in-beam test itself decides.
    """

    def __init__(self, dirs: np.ndarray) -> None:
        # ~2 cells per ray spacing on a scan covering half the sphere; only the rows the rays span are kept
        self.n_inc = int(np.clip(round(2.5 * math.sqrt(len(dirs))), 8, 2048))
        self.n_az = 2 * self.n_inc
        self.h_inc = math.pi / self.n_inc
        self.h_az = 2 * math.pi / self.n_az
        inc, az, _ = _directions(dirs[:, 0], dirs[:, 1], dirs[:, 2])
        row = np.clip(np.floor(inc / self.h_inc).astype(np.int64), 0, self.n_inc - 1)
        self.row0, self.row1 = int(row.min()), int(row.max())
        col = np.floor((az + math.pi) / self.h_az).astype(np.int64) % self.n_az
        cell = (row - self.row0) * self.n_az + col
        self.order = np.argsort(cell)
        n_cells = (self.row1 - self.row0 + 1) * self.n_az
        self.offsets = np.zeros(n_cells + 1, dtype=np.int64)
        np.cumsum(np.bincount(cell, minlength=n_cells), out=self.offsets[1:])

    def candidates(
        self, inc: np.ndarray, az: np.ndarray, angle: np.ndarray, az_sin: np.ndarray, budget: int = 1 << 22
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(point, ray) pairs, in chunks of about ``budget``, holding every ray within ``angle`` (radians)
        of each point's direction ``(inc, az)``; ``az_sin`` bounds ``sin(angle) / sin(inc)`` from above,
        the sine of the cap's azimuth half-width (``>= 1``: the cap holds a pole, every azimuth)."""
        lo_r = np.clip(np.floor((inc - angle) / self.h_inc), self.row0, self.row1 + 1).astype(np.int64)
        hi_r = np.clip(np.floor((inc + angle) / self.h_inc), self.row0 - 1, self.row1).astype(np.int64)
        wide = ~(az_sin < 1)
        half = np.where(wide, math.pi, np.arcsin(np.where(wide, 0.0, az_sin)))
        half *= 1 + 1e-9
        half += 1e-9
        lo_c = np.floor((az - half + math.pi) / self.h_az).astype(np.int64)
        hi_c = np.floor((az + half + math.pi) / self.h_az).astype(np.int64)
        full = hi_c - lo_c + 1 >= self.n_az
        lo_c[full], hi_c[full] = 0, self.n_az - 1
        # per row one column span, and a second for the few that cross +-pi (the part wrapped around)
        wrapped = np.nonzero((lo_c < 0) | (hi_c >= self.n_az))[0]
        wlo, whi = lo_c[wrapped], hi_c[wrapped]
        n_rows = hi_r - lo_r  # rows beyond the first (-1: outside the rows the rays span)
        spans = [
            (None, lo_r, n_rows, np.maximum(lo_c, 0), np.minimum(hi_c, self.n_az - 1)),
            (
                wrapped,
                lo_r[wrapped],
                n_rows[wrapped],
                np.where(wlo < 0, wlo + self.n_az, 0),
                np.where(wlo < 0, self.n_az - 1, whi - self.n_az),
            ),
        ]
        seg_pt, seg_lo, seg_hi = [], [], []
        for which, rows0, extra, c0, c1 in spans:
            for k in range(int(extra.max(initial=-1)) + 1):
                sel = np.nonzero(extra >= k)[0]
                base = (rows0[sel] + (k - self.row0)) * self.n_az
                start = self.offsets[base + c0[sel]]
                stop = self.offsets[base + c1[sel] + 1]  # <= start for an empty span
                keep = stop > start
                seg_pt.append(sel[keep] if which is None else which[sel[keep]])
                seg_lo.append(start[keep])
                seg_hi.append(stop[keep])
        if not seg_pt:
            return []
        pt, lo, hi = np.concatenate(seg_pt), np.concatenate(seg_lo), np.concatenate(seg_hi)
        length = hi - lo
        ends = np.cumsum(length)
        out = []
        first_seg = 0
        while first_seg < len(pt):
            last = int(np.searchsorted(ends, ends[first_seg] - length[first_seg] + budget, side="right"))
            last = max(last, first_seg + 1)
            sl = slice(first_seg, last)
            ln = length[sl]
            total = int(ln.sum())
            seg_start = np.cumsum(ln) - ln
            within = np.arange(total) - np.repeat(seg_start, ln)
            out.append((np.repeat(pt[sl], ln), self.order[np.repeat(lo[sl], ln) + within]))
            first_seg = last
        return out


def _directions(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inclination from +z (0..pi), azimuth (-pi..pi) and horizontal / full length of vectors, float64."""
    x, y, z = (np.asarray(c, dtype=np.float64) for c in (x, y, z))
    rh = np.hypot(x, y)
    inc = np.arctan2(rh, z)  # well conditioned everywhere, unlike arccos(z / r) near the poles
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.hypot(rh, z) / rh  # 1 / sin(inc)
    return inc, np.arctan2(y, x), ratio


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
        qc = [np.ascontiguousarray(q[:, a]) for a in range(3)]
        dqc = [np.ascontiguousarray(dq[:, a]) for a in range(3)]
        m = np.asarray(scan.global_T_mesh, dtype=np.float32)
        r_t = np.ascontiguousarray(m[:3, :3].T)
        t_neg = -m[:3, 3]
        t_inv = np.array([_dot3(r_t[r][None], t_neg[None])[0] for r in range(3)], dtype=np.float32)
        todo = np.nonzero(first > 0)[0]  # accurate at the smallest tolerance: nothing left to learn
        x = [recon[todo, a] for a in range(3)]
        p = [_dot3c(x, list(r_t[r])) + t_inv[r] for r in range(3)]
        rp = np.sqrt(_dot3c(p, p))
        beam = start + rp * tan_div
        # the angle from a point's direction within which a ray may hold it in its beam, with margins
        # for the float32 arithmetic of the test (which alone decides)
        with np.errstate(divide="ignore", invalid="ignore"):
            sin_a = np.where(rp > 0, beam.astype(np.float64) / rp, 2.0) * (1 + 2e-4)
        angle = np.where(sin_a >= 1, 4.0, np.arcsin(np.minimum(sin_a, 1.0)) + 3e-6)
        inc, az, inv_sin_inc = _directions(*p)
        az_sin = (sin_a + 3e-6) * inv_sin_inc  # >= sin(angle) / sin(inc)
        for i, j in _RayGrid(dq).candidates(inc, az, angle, az_sin):
            pi = [c[i] for c in p]
            dj = [c[j] for c in dqc]
            along = _dot3c(dj, pi)
            off = [pi[a] - along * dj[a] for a in range(3)]
            bi = beam[i]
            in_beam = (along >= 0) & (_dot3c(off, off) <= bi * bi)
            i, j, along = i[in_beam], j[in_beam], along[in_beam]
            diff = [qc[a][j] - pi[a][in_beam] for a in range(3)]
            idx = _first_index(_dot3c(diff, diff), tol2)
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
) -> tuple[list[float], list[int], list[int]]:
    """Official accuracy per tolerance, with the observed and accurate point counts per tolerance."""
    recon = np.asarray(reconstruction, dtype=np.float32).reshape(-1, 3)
    nt = len(tolerances)
    if len(recon) == 0:
        return [0.0] * nt, [0] * nt, [0] * nt
    first, inacc = classify(scans, recon, tolerances, beam_start_radius, beam_divergence_deg)
    # seen (accurate or inaccurate) from tolerance 0 when flagged, else from where it is accurate
    seen_from = np.where(inacc, 0, first)
    total, valid_cells = _VoxelGrids(recon, voxel_size).mean_sums(first, seen_from, nt, ratio_float32=True)
    values = [float(np.float32(s / c)) if c else 0.0 for s, c in zip(total, valid_cells, strict=True)]
    observed = np.cumsum(np.bincount(seen_from, minlength=nt + 1))[:nt]
    accurate = np.cumsum(np.bincount(first, minlength=nt + 1))[:nt]
    return values, [int(c) for c in observed], [int(c) for c in accurate]


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


@contextlib.contextmanager
def _reuse_freed_memory() -> Iterator[None]:
    """Keep freed memory in the heap while the metrics run (glibc only; elsewhere a no-op).

    The metrics make and drop hundreds of arrays of millions of elements; by default glibc hands each
    one back to the kernel and the next one faults its pages in again (about a tenth of the CPU time
    on a 10-frame cloud; half the page faults). Afterwards the thresholds are left at glibc's own steady state for a
    process that has freed large blocks (mmap above 32 MiB, trim above 64 MiB) and the heap is trimmed.
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        yield
        return
    mallopt(_M_MMAP_THRESHOLD, 1 << 30)
    mallopt(_M_TRIM_THRESHOLD, 1 << 31)
    try:
        yield
    finally:
        mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        mallopt(_M_TRIM_THRESHOLD, 64 << 20)
        malloc_trim(0)


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
