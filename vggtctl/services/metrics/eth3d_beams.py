"""The in-beam test of ETH3D's accuracy, compiled: every reconstruction point against one scan's rays.

One pass per scan over the points, with no temporary arrays: each point is moved into the scan's frame,
its beam cone is turned into inclination rows and azimuth spans of the scan's spherical ray grid, and the
rays of those cells are tested one by one. The arithmetic that decides a number (the frame change, the
in-beam test, the squared distance to the scan point) is float32 in the program's order of operations
(Eigen's ``a0·b0 + (a1·b1 + a2·b2)``), so the result is the one the vectorised numpy form gave, bit for
bit; the cone bounds are float64 with margins and only decide which rays are tried.

Numba compiles it on first use and caches the machine code next to this file (or in ``NUMBA_CACHE_DIR``),
so later processes load it in a fraction of a second.
"""

from __future__ import annotations

import math

import numba
import numpy as np

# Abramowitz & Stegun 4.4.49: atan(x) on [-1, 1]; its 7-digit coefficients reach 1.15e-5 rad, so the
# margin is 1.5e-5 (tests/test_eth3d_protocol.py checks it)
_ATAN = (0.9998660, -0.3302995, 0.1801410, -0.0851330, 0.0208351)
ATAN_ERROR = 1.5e-5


@numba.njit(cache=True, inline="always")
def _atan2(y: float, x: float) -> float:
    """``atan2(y, x)`` within :data:`ATAN_ERROR`, a few times cheaper than libm's (both float64)."""
    ax, ay = abs(x), abs(y)
    big = max(ax, ay)
    if big == 0:
        return 0.0
    t = min(ax, ay) / big
    s = t * t
    r = t * (_ATAN[0] + s * (_ATAN[1] + s * (_ATAN[2] + s * (_ATAN[3] + s * _ATAN[4]))))
    if ay > ax:
        r = 0.5 * math.pi - r
    if x < 0:
        r = math.pi - r
    return -r if y < 0 else r


@numba.njit(cache=True, inline="always")
def _asin_above(x: float) -> float:
    """An upper bound of ``asin(x)`` for ``0 <= x < 1``: ``x + x³`` below 0.5 (asin's series is
    ``x + x³/6 + 3x⁵/40 + …``), libm's asin above."""
    return x + x * x * x if x < 0.5 else math.asin(x)


@numba.njit(cache=True, nogil=True)
def beam_test_scan(
    recon: np.ndarray,
    r_t: np.ndarray,
    t_inv: np.ndarray,
    q: np.ndarray,
    rq: np.ndarray,
    dq: np.ndarray,
    offsets: np.ndarray,
    grid: np.ndarray,
    start: np.float32,
    tan_div: np.float32,
    tol2: np.ndarray,
    first: np.ndarray,
    inaccurate: np.ndarray,
) -> None:
    """Update ``first`` (smallest accurate tolerance index) and ``inaccurate`` from one scan, in place.

    Args:
        recon: ``[N, 3]`` float32 world points.
        r_t, t_inv: float32 scan ← world rotation (``[3, 3]``) and translation (``[3]``).
        q, rq, dq: the scan's points, their ranges and unit directions (float32), sorted by grid cell.
        offsets: ``[cells + 1]`` int64: the rays of cell c are ``offsets[c]:offsets[c + 1]``.
        grid: float64 ``[n_inc, n_az, h_inc, h_az, row0, row1]`` of the ray grid (cells cover rows
            ``row0..row1`` of ``n_inc`` inclination rows, each of ``n_az`` azimuth columns).
        start, tan_div: beam radius at the scanner and tangent of its divergence (float32).
        tol2: float32 squared tolerances, increasing.
        first: int64 ``[N]``; a point already at 0 is skipped (accurate at every tolerance).
        inaccurate: bool ``[N]``.
    """
    n_az = int(grid[1])
    h_inc, h_az = grid[2], grid[3]
    row0, row1 = int(grid[4]), int(grid[5])
    nt = len(tol2)
    for i in range(recon.shape[0]):
        if first[i] == 0:
            continue
        x0, x1, x2 = recon[i, 0], recon[i, 1], recon[i, 2]
        p0 = (x0 * r_t[0, 0] + (x1 * r_t[0, 1] + x2 * r_t[0, 2])) + t_inv[0]
        p1 = (x0 * r_t[1, 0] + (x1 * r_t[1, 1] + x2 * r_t[1, 2])) + t_inv[1]
        p2 = (x0 * r_t[2, 0] + (x1 * r_t[2, 1] + x2 * r_t[2, 2])) + t_inv[2]
        rp = np.sqrt(p0 * p0 + (p1 * p1 + p2 * p2))
        beam = start + rp * tan_div
        beam2 = beam * beam
        # the cone of directions whose rays may hold the point, float64 with margins for the float32 test
        # and for the approximate angles (they only widen which rays are tried)
        b64, r64 = np.float64(beam), np.float64(rp)
        sin_a = (b64 / r64 if r64 > 0 else 2.0) * (1 + 2e-4)
        angle = (4.0 if sin_a >= 1 else _asin_above(sin_a)) + 3e-6 + 2 * ATAN_ERROR
        f0, f1, f2 = np.float64(p0), np.float64(p1), np.float64(p2)
        rh = math.sqrt(f0 * f0 + f1 * f1)
        inc = _atan2(rh, f2)
        az = _atan2(f1, f0)
        az_sin = (sin_a + 3e-6) * (math.sqrt(rh * rh + f2 * f2) / rh) * (1 + 1e-12) if rh > 0 else math.inf
        lo_r = max(int(math.floor((inc - angle) / h_inc)), row0)
        hi_r = min(int(math.floor((inc + angle) / h_inc)), row1)
        half = math.pi if not az_sin < 1 else _asin_above(az_sin)
        half = half * (1 + 1e-9) + 1e-9 + 2 * ATAN_ERROR
        lo_c = int(math.floor((az - half + math.pi) / h_az))
        hi_c = int(math.floor((az + half + math.pi) / h_az))
        # one column span per row, and a second one where the span crosses azimuth +-pi
        c0, c1, w0, w1 = lo_c, hi_c, 0, -1
        if hi_c - lo_c + 1 >= n_az:
            c0, c1 = 0, n_az - 1
        elif lo_c < 0:
            c0, w0, w1 = 0, lo_c + n_az, n_az - 1
        elif hi_c >= n_az:
            c1, w1 = n_az - 1, hi_c - n_az
        best = first[i]
        flagged = inaccurate[i]
        for row in range(lo_r, hi_r + 1):
            base = (row - row0) * n_az
            for span in range(2):
                a, b = (c0, c1) if span == 0 else (w0, w1)
                if b < a:
                    continue
                for k in range(offsets[base + a], offsets[base + b + 1]):
                    d0, d1, d2 = dq[k, 0], dq[k, 1], dq[k, 2]
                    along = d0 * p0 + (d1 * p1 + d2 * p2)
                    if not along >= 0:
                        continue
                    o0, o1, o2 = p0 - along * d0, p1 - along * d1, p2 - along * d2
                    if not (o0 * o0 + (o1 * o1 + o2 * o2)) <= beam2:
                        continue
                    e0, e1, e2 = q[k, 0] - p0, q[k, 1] - p1, q[k, 2] - p2
                    dist2 = e0 * e0 + (e1 * e1 + e2 * e2)
                    idx = 0
                    while idx < nt and not tol2[idx] >= dist2:  # as searchsorted: NaN after all
                        idx += 1
                    if idx < best:
                        best = idx
                    if along < rq[k]:
                        flagged = True
        first[i] = best
        inaccurate[i] = flagged
