"""ETH3D's per-voxel averaging, compiled: the mean over occupied cells of a per-cell ratio.

A point's cell is ``floor(p / voxel + shift)`` per axis in float32, as the program floors it. The cells
are found with a hash table on the integer triple (no bound on the cloud's extent, no sort), built the
cache-friendly way: the points are first partitioned by the low bits of their cell's hash (one counting
pass, a thousand or so points per part), then each part gets its own small table, which stays in cache.
Per tolerance, each cell holding a point seen at that tolerance adds its ratio (points within / points
seen) to a float64 sum, as the program averages them.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_PART_POINTS = 1024  # points per partition, about: its table (2x slots) stays in the L2 cache


@numba.njit(cache=True, inline="always")
def _cell_hash(vx: int, vy: int, vz: int) -> int:
    h = (vx * 73856093) ^ (vy * 19349663) ^ (vz * 83492791)
    return h ^ (h >> 29)


@numba.njit(cache=True, nogil=True)
def voxel_ratio_sums(
    points: np.ndarray,
    inv: np.float32,
    shift: np.float32,
    first: np.ndarray,
    seen_from: np.ndarray,
    nt: int,
    ratio_float32: bool,
    sums: np.ndarray,
    counted: np.ndarray,
) -> int:
    """Add one voxel grid's per-cell ratios; returns the number of occupied cells.

    Per tolerance index t, over the cells holding a point with ``seen_from <= t``: the ratio of points
    with ``first <= t`` to points with ``seen_from <= t`` goes into ``sums[t]`` (float64; rounded to
    float32 first when ``ratio_float32``, as the program's accuracy does), and 1 into ``counted[t]``.
    Index ``nt`` in ``first`` / ``seen_from`` means never.

    Args:
        points: ``[N, 3]`` float32 finite points.
        inv: float32 ``1 / voxel_size``.
        shift: float32 grid offset in voxels (0 or 0.5).
        first, seen_from: int64 ``[N]`` tolerance indices, 0..nt.
        nt: Number of tolerances.
        ratio_float32: Round each cell's ratio to float32 before summing.
        sums, counted: float64 / int64 ``[nt]`` accumulators.
    """
    n = points.shape[0]
    parts = 1
    while parts * _PART_POINTS < n:
        parts *= 2
    low = parts - 1
    bits = 0
    while (1 << bits) < parts:
        bits += 1
    # pass 1: how many points each part gets; pass 2: the points' cells and values, grouped by part
    # (the cell is recomputed rather than stored: arithmetic is cheaper than the memory traffic)
    starts = np.zeros(parts + 1, dtype=np.int64)
    for i in range(n):
        vx = np.int64(np.floor(points[i, 0] * inv + shift))
        vy = np.int64(np.floor(points[i, 1] * inv + shift))
        vz = np.int64(np.floor(points[i, 2] * inv + shift))
        starts[(_cell_hash(vx, vy, vz) & low) + 1] += 1
    for p in range(parts):
        starts[p + 1] += starts[p]
    fill = starts[:-1].copy()
    grouped = np.empty((n, 4), dtype=np.int64)  # x, y, z, first * (nt + 1) + seen_from
    for i in range(n):
        vx = np.int64(np.floor(points[i, 0] * inv + shift))
        vy = np.int64(np.floor(points[i, 1] * inv + shift))
        vz = np.int64(np.floor(points[i, 2] * inv + shift))
        p = _cell_hash(vx, vy, vz) & low
        k = fill[p]
        fill[p] += 1
        grouped[k, 0], grouped[k, 1], grouped[k, 2] = vx, vy, vz
        grouped[k, 3] = first[i] * (nt + 1) + seen_from[i]
    # pass 3: per part, a small table of its cells with their counts per tolerance index
    largest = 1
    for p in range(parts):
        largest = max(largest, starts[p + 1] - starts[p])
    size = 2
    while size < 2 * largest:
        size *= 2
    keys = np.empty((size, 3), dtype=np.int64)
    used = np.zeros(size, dtype=np.bool_)
    within = np.zeros((size, nt + 1), dtype=np.int32)
    seen = np.zeros((size, nt + 1), dtype=np.int32)
    occupied = np.empty(size, dtype=np.int64)
    cells = 0
    for p in range(parts):
        m = starts[p + 1] - starts[p]
        if m == 0:
            continue
        mask = 1
        while mask < 2 * m:
            mask *= 2
        mask -= 1
        n_occ = 0
        for k in range(starts[p], starts[p + 1]):
            vx, vy, vz = grouped[k, 0], grouped[k, 1], grouped[k, 2]
            slot = (_cell_hash(vx, vy, vz) >> bits) & mask
            while used[slot] and not (keys[slot, 0] == vx and keys[slot, 1] == vy and keys[slot, 2] == vz):
                slot = (slot + 1) & mask
            if not used[slot]:
                used[slot] = True
                keys[slot, 0], keys[slot, 1], keys[slot, 2] = vx, vy, vz
                occupied[n_occ] = slot
                n_occ += 1
            f, o = divmod(grouped[k, 3], nt + 1)
            within[slot, f] += 1
            seen[slot, o] += 1
        cells += n_occ
        for j in range(n_occ):
            slot = occupied[j]
            a = 0
            s = 0
            for t in range(nt):
                a += within[slot, t]
                s += seen[slot, t]
                if s > 0:
                    if ratio_float32:
                        sums[t] += np.float64(np.float32(a) / np.float32(s))
                    else:
                        sums[t] += a / s
                    counted[t] += 1
            used[slot] = False
            within[slot, :] = 0
            seen[slot, :] = 0
    return cells


@numba.njit(cache=True, nogil=True)
def counting_order(ids: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Items grouped by id (0..groups-1), stable: ``order`` ``[N]`` and ``starts`` ``[groups + 1]``
    (group g holds ``order[starts[g]:starts[g + 1]]``), in two counting passes."""
    starts = np.zeros(groups + 1, dtype=np.int64)
    for i in range(len(ids)):
        starts[ids[i] + 1] += 1
    for g in range(groups):
        starts[g + 1] += starts[g]
    fill = starts[:-1].copy()
    order = np.empty(len(ids), dtype=np.int64)
    for i in range(len(ids)):
        g = ids[i]
        order[fill[g]] = i
        fill[g] += 1
    return order, starts


def spatial_order(points: np.ndarray, cells_per_axis: int = 64) -> np.ndarray:
    """An order that puts points near each other next to each other in memory: by coarse cell of a grid
    over the bulk of the cloud (0.1-99.9 % per axis; points outside go to the border cells), cells in
    x-major order, then input order. Only memory locality depends on it, never a result."""
    n = len(points)
    if n < 2:
        return np.arange(n)
    sample = points[:: max(n // 20_000, 1)].astype(np.float64)
    lo, hi = np.quantile(sample, 0.001, axis=0), np.quantile(sample, 0.999, axis=0)
    size = np.maximum((hi - lo) / cells_per_axis, 1e-6)
    return _grid_order(points, lo, 1.0 / size, cells_per_axis)


@numba.njit(cache=True, nogil=True)
def _grid_order(points: np.ndarray, lo: np.ndarray, inv: np.ndarray, dims: int) -> np.ndarray:
    ids = np.empty(points.shape[0], dtype=np.int64)
    for i in range(points.shape[0]):
        key = 0
        for a in range(3):
            c = int(math.floor((points[i, a] - lo[a]) * inv[a]))
            key = key * dims + min(max(c, 0), dims - 1)
        ids[i] = key
    return counting_order(ids, dims**3)[0]
