"""Nearest-neighbour point-cloud figures: mean/median NN distances and plain NN precision/recall/F1.

These are *not* ETH3D's accuracy/completeness/F1 (that protocol is
:mod:`vggtctl.services.metrics.eth3d_protocol`); in reports they are named for what they are
(``pointcloud_nn``):

* ``mean_dist_pred_to_gt`` = mean distance from each predicted point to its nearest ground-truth point
  (the "Acc" of the VGGT/π³/CUT3R tables); ``mean_dist_gt_to_pred`` the other way ("Comp");
  ``chamfer`` their mean ("Overall"/"CD"). Medians are reported too. Every point counts once (one per
  valid pixel for predictions, as VGGT/π³ do).
* ``nn_precision``/``nn_recall`` (τ) = fraction of predicted / ground-truth points with a neighbour
  within τ on the other side, ``nn_f1`` = 2PR/(P+R). Plain nearest neighbours: no beam model, no
  per-voxel averaging, so they differ from ETH3D's numbers (by 0.05 vs 0.44 at 1 cm on a noisy cloud).

Speed (scipy ``cKDTree``, all cores). Exact nearest neighbours of points far from a dense surface are
slow in a k-d tree (its axis-aligned cells cut tilted surfaces badly: ~0.1-1 ms per query at 1 cm
spacing), so ``NNIndex`` searches a pyramid: the points themselves (exact) for distances under
``far_ratio`` (10) × ``voxel_size``, then the cloud voxel-averaged at 1×, 4×, 16×, … ``voxel_size``, each
level answering distances of 10 to 40 of its voxels, where the averaging moves a distance by ~0.2 % on
average (at most √3 voxels). Query sets above ``max_queries`` points are a seeded uniform subset
(unbiased; the standard error of each mean is reported).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from vggtctl.errors import EvaluationError
from vggtctl.services.metrics.eth3d_protocol import ETH3D_TOLERANCES

PYRAMID_STEP = 4.0
FAR_RATIO = 10.0
_MATMUL_BLOCK = 16384  # rows per matrix product in unproject_depth


def tolerance_key(tol: float) -> str:
    """``0.02`` → ``"2cm"`` (keys of the precision/recall/F1 dicts)."""
    return f"{tol * 100:g}cm"


def voxel_downsample(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """Replace the points in each occupied cubic voxel by their centroid.

    Args:
        points: ``[N, 3]`` finite points.
        voxel_size: Edge length (same units as the points); ``<= 0`` returns the points unchanged.

    Returns:
        ``[M, 3]`` float64 centroids, M ≤ N, in order of their voxel index.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if voxel_size <= 0 or len(pts) == 0:
        return pts
    cells = np.floor(pts / voxel_size).astype(np.int64)
    cells -= cells.min(axis=0)
    dims = cells.max(axis=0) + 1
    if float(np.prod(dims.astype(np.float64))) >= 2**62:
        # Far-flung points (a ground plane to the horizon): renumber each axis by its occupied cells
        # first, so the flat key below cannot overflow (at most N distinct values per axis).
        for k in range(3):
            _, cells[:, k] = np.unique(cells[:, k], return_inverse=True)
        dims = cells.max(axis=0) + 1
    if float(np.prod(dims.astype(np.float64))) < 2**62:
        # A flat int64 key sorts much faster than rows.
        key = (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]
        _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    else:
        _, inverse, counts = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    out = np.empty((len(counts), 3))
    for k in range(3):
        out[:, k] = np.bincount(inverse, weights=pts[:, k], minlength=len(counts)) / counts
    return out


class NNIndex:
    """Distances to the nearest point of a reference cloud, through a pyramid of voxel grids.

    Level 0 is the reference as given (exact distances); level ``l ≥ 1`` is it voxel-averaged at
    ``voxel_size · step^(l-1)`` (built only when a query needs it). A query is answered at the finest level
    whose search, bounded to ``far_ratio`` voxels of the next level, finds a point. A distance measured
    at level ``l ≥ 1`` thus spans at least ``far_ratio`` voxels of that level, and the voxel averaging
    moves it by at most √3 voxels (≈0.2 % on average in ``benchmarks/bench_evaluate.py``).

    Args:
        points: ``[N, 3]`` reference points.
        voxel_size: Base voxel of the pyramid (0: one exact search, no pyramid).
        far_ratio: Voxels of a level a distance must span before that level may answer it.
        step: Voxel growth between levels.
        min_points: A level with at most this many points is the last (answers everything left).
    """

    def __init__(
        self,
        points: np.ndarray,
        voxel_size: float = 0.01,
        far_ratio: float = FAR_RATIO,
        step: float = PYRAMID_STEP,
        min_points: int = 2000,
    ) -> None:
        self.voxel_size = voxel_size
        self.far_ratio = far_ratio
        self.step = step
        self.min_points = min_points
        self._levels: list[tuple[np.ndarray, cKDTree | None]] = [
            (np.asarray(points, dtype=np.float64).reshape(-1, 3), None)
        ]

    def _size(self, level: int) -> float:
        return self.voxel_size * self.step ** (level - 1)

    def _level(self, i: int) -> tuple[cKDTree, bool]:
        """Tree of level ``i`` and whether it is the last level (built on first use)."""
        while len(self._levels) <= i:
            prev, prev_tree = self._levels[-1]
            pts = voxel_downsample(prev, self._size(len(self._levels)))
            # A grid that barely thins the cloud (already sparser than the voxel) is not worth a tree:
            # the finer level answers that range at the same cost, exactly.
            self._levels.append((prev, prev_tree) if len(pts) > 0.7 * len(prev) else (pts, None))
        pts, tree = self._levels[i]
        if tree is None:
            tree = cKDTree(pts)
            self._levels = [(p, tree if p is pts else t) for p, t in self._levels]
        return tree, self.voxel_size <= 0 or len(pts) <= self.min_points

    def query(self, queries: np.ndarray) -> np.ndarray:
        """Distance of each query ``[M, 3]`` to the reference, ``[M]`` float64."""
        q = np.asarray(queries, dtype=np.float64).reshape(-1, 3)
        out = np.empty(len(q))
        pending = np.arange(len(q))
        level = 0
        while len(pending):
            tree, last = self._level(level)
            # a handful of stragglers is cheaper to finish here than a coarser grid is to build
            last = last or len(pending) <= 256
            bound = np.inf if last else self.far_ratio * self._size(level + 1)
            d, _ = tree.query(q[pending], k=1, distance_upper_bound=bound, workers=-1)
            found = np.isfinite(d)
            out[pending[found]] = d[found]
            pending = pending[~found]
            level += 1
        return out


def subsample(points: np.ndarray, max_points: int | None, seed: int = 0) -> np.ndarray:
    """A seeded uniform subset of at most ``max_points`` rows (all rows, in order, when fewer)."""
    if max_points is None or len(points) <= max_points:
        return points
    idx = np.sort(np.random.default_rng(seed).choice(len(points), size=max_points, replace=False))
    return points[idx]


@dataclass
class PointCloudResult:
    """Nearest-neighbour figures of one scene, in ground-truth units (metres on ETH3D).

    ``accuracy``/``completeness``/``overall`` hold the mean NN distances pred→gt / gt→pred / their mean
    and ``precision``/``recall``/``f1`` the plain NN fractions; :meth:`to_dict` names them for what they
    are (``mean_dist_pred_to_gt``, ``nn_precision``, …), never ETH3D's accuracy/completeness/F1.
    """

    accuracy: float
    completeness: float
    overall: float
    accuracy_median: float
    completeness_median: float
    accuracy_stderr: float
    completeness_stderr: float
    precision: dict[str, float]
    recall: dict[str, float]
    f1: dict[str, float]
    pred_points: int
    gt_points: int
    pred_queries: int
    gt_queries: int
    voxel_size: float

    def summary(self) -> dict[str, float]:
        return {
            "mean_dist_pred_to_gt": self.accuracy,
            "mean_dist_gt_to_pred": self.completeness,
            "chamfer": self.overall,
        }

    def to_dict(self) -> dict[str, object]:
        return {
            "mean_dist_pred_to_gt": self.accuracy,
            "mean_dist_gt_to_pred": self.completeness,
            "chamfer": self.overall,
            "median_dist_pred_to_gt": self.accuracy_median,
            "median_dist_gt_to_pred": self.completeness_median,
            "mean_dist_pred_to_gt_stderr": self.accuracy_stderr,
            "mean_dist_gt_to_pred_stderr": self.completeness_stderr,
            "nn_precision": self.precision,
            "nn_recall": self.recall,
            "nn_f1": self.f1,
            "pred_points": self.pred_points,
            "gt_points": self.gt_points,
            "pred_queries": self.pred_queries,
            "gt_queries": self.gt_queries,
            "voxel_size": self.voxel_size,
            "nn_search": {"pyramid_step": PYRAMID_STEP, "far_ratio": FAR_RATIO}
            if self.voxel_size > 0
            else "exact",
        }


def _stderr(d: np.ndarray, total: int) -> float:
    # standard error of a mean estimated from a uniform subset; 0 when every point was used
    if len(d) >= total or len(d) < 2:
        return 0.0
    return float(np.std(d, ddof=1) / np.sqrt(len(d)) * np.sqrt(1 - len(d) / total))


def pointcloud_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    voxel_size: float = 0.01,
    tolerances: tuple[float, ...] = ETH3D_TOLERANCES,
    max_queries: int | None = 100_000,
    seed: int = 0,
) -> tuple[PointCloudResult, np.ndarray, np.ndarray]:
    """Accuracy, completeness, overall and precision/recall/F1 of an aligned prediction.

    Args:
        pred: ``[N, 3]`` predicted points, already in the ground-truth frame (non-finite rows dropped).
        gt: ``[M, 3]`` ground-truth points.
        voxel_size: Base voxel of the nearest-neighbour pyramid (0: exact search, slow for far points).
        tolerances: Distance thresholds for precision/recall/F1.
        max_queries: Score a seeded uniform subset of at most this many points per side (None: all).
        seed: Seed of that subset.

    Returns:
        The ``PointCloudResult``, the scored predicted points ``[N', 3]`` and their distance to the
        ground truth ``[N']`` (for coloured error clouds).

    Raises:
        EvaluationError: Either cloud is empty.
    """
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 3)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 3)
    pred = pred[np.isfinite(pred).all(1)]
    gt = gt[np.isfinite(gt).all(1)]
    if len(pred) == 0:
        raise EvaluationError(
            "no finite predicted point to evaluate", "check the model output (vggtctl infer on this scene)"
        )
    if len(gt) == 0:
        raise EvaluationError(
            "the ground-truth point cloud is empty", "check the scene's scans and depth maps"
        )
    q_pred = subsample(pred, max_queries, seed)
    q_gt = subsample(gt, max_queries, seed + 1)
    d_pred = NNIndex(gt, voxel_size).query(q_pred)
    d_gt = NNIndex(pred, voxel_size).query(q_gt)
    acc, comp = float(d_pred.mean()), float(d_gt.mean())
    precision, recall, f1 = {}, {}, {}
    for tol in tolerances:
        p, r = float(np.mean(d_pred <= tol)), float(np.mean(d_gt <= tol))
        k = tolerance_key(tol)
        precision[k], recall[k] = p, r
        f1[k] = 2 * p * r / (p + r) if p + r > 0 else 0.0
    result = PointCloudResult(
        accuracy=acc,
        completeness=comp,
        overall=(acc + comp) / 2,
        accuracy_median=float(np.median(d_pred)),
        completeness_median=float(np.median(d_gt)),
        accuracy_stderr=_stderr(d_pred, len(pred)),
        completeness_stderr=_stderr(d_gt, len(gt)),
        precision=precision,
        recall=recall,
        f1=f1,
        pred_points=len(pred),
        gt_points=len(gt),
        pred_queries=len(q_pred),
        gt_queries=len(q_gt),
        voxel_size=float(voxel_size),
    )
    return result, q_pred, d_pred


def unproject_depth(depth: np.ndarray, intrinsic: np.ndarray, extrinsic: np.ndarray) -> np.ndarray:
    """World points of depth maps with COLMAP-convention cameras (pixel ``(u, v)`` centred at +0.5).

    Args:
        depth: ``[S, H, W]`` z-depth (any value; invalid pixels give meaningless points).
        intrinsic: ``[S, 3, 3]`` intrinsics in the same pixel grid (pixel-corner convention).
        extrinsic: ``[S, 3, 4]`` world→camera.

    Returns:
        ``[S, H, W, 3]`` float64 world points.
    """
    depth = np.asarray(depth, dtype=np.float64)
    s, h, w = depth.shape
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    out = np.empty((s, h, w, 3))
    for i in range(s):
        k, ext = np.asarray(intrinsic[i], np.float64), np.asarray(extrinsic[i], np.float64)
        cam = np.stack(
            [(u - k[0, 2]) / k[0, 0] * depth[i], (v - k[1, 2]) / k[1, 1] * depth[i], depth[i]], axis=-1
        )
        rel = (cam - ext[:, 3]).reshape(-1, 3)
        flat = out[i].reshape(-1, 3)
        # Rᵀ (X_c − t), as row vectors, in blocks of rows (see Sim3.apply: no spinning BLAS threads)
        for r in range(0, len(rel), _MATMUL_BLOCK):
            np.matmul(rel[r : r + _MATMUL_BLOCK], ext[:, :3], out=flat[r : r + _MATMUL_BLOCK])
    return out


def visible_points(
    points: np.ndarray,
    depth: np.ndarray,
    intrinsic: np.ndarray,
    extrinsic: np.ndarray,
    rel_tol: float = 0.05,
) -> np.ndarray:
    """Which points are seen by at least one view: they project onto a pixel with valid depth that agrees
    with their own camera depth within ``rel_tol`` (so occluded and out-of-view points are dropped).

    Args:
        points: ``[N, 3]`` world points (e.g. laser-scan points).
        depth: ``[S, H, W]`` ground-truth depth of the views, 0 where invalid.
        intrinsic: ``[S, 3, 3]`` in the depth maps' pixel grid (pixel-corner convention).
        extrinsic: ``[S, 3, 4]`` world→camera.
        rel_tol: Allowed ``|z − depth| / depth``.

    Returns:
        ``[N]`` boolean mask.
    """
    # float32 is ample for a pixel index and a 5 % depth test, and halves the memory traffic
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    seen = np.zeros(len(pts), dtype=bool)
    s, h, w = np.shape(depth)
    for i in range(s):
        k, ext = np.asarray(intrinsic[i], np.float32), np.asarray(extrinsic[i], np.float32)
        todo = np.nonzero(~seen)[0]  # a point seen once needs no other view
        cam = pts[todo] @ ext[:, :3].T + ext[:, 3]
        z = cam[:, 2]
        front = z > 0
        todo, cam, z = todo[front], cam[front], z[front]
        col = np.floor(k[0, 0] * cam[:, 0] / z + k[0, 2])
        row = np.floor(k[1, 1] * cam[:, 1] / z + k[1, 2])
        inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
        todo, z = todo[inside], z[inside]
        d = depth[i][row[inside].astype(np.int64), col[inside].astype(np.int64)]
        ok = (d > 0) & (np.abs(z - d) <= rel_tol * d)
        seen[todo[ok]] = True
    return seen
