"""Long sequences: overlapping chunks of frames, each glued to the growing reconstruction by a robust Sim(3).

One VGGT pass needs memory that grows with the number of frames (global attention and the kept layers
hold every frame's tokens). Splitting a scene into *independent* chunks gives each chunk its own world
frame and scale. Here consecutive chunks share ``overlap`` frames; the overlap frames' depth-derived
points (confident pixels only) are predicted twice, once by the reconstruction so far and once by the
new chunk, and :func:`vggtctl.services.sim3.robust_sim3` maps the chunk onto the reconstruction. The
first chunk starts at frame 0, so every pose and point ends up in frame 0's camera frame, as in a
single pass.

Frames in an overlap keep the earlier chunk's prediction; each chunk contributes its new frames.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from vggtctl.errors import InputError, Problem, raise_problems
from vggtctl.progress import NULL_PROGRESS, Progress
from vggtctl.services.metrics.align import Sim3
from vggtctl.services.sim3 import DEFAULT_INLIER_REL, Sim3Fit, robust_sim3

# An overlap is "weak" (warned about, flagged in meta.json) below these.
WEAK_INLIER_RATIO = 0.5
WEAK_MIN_POINTS = 200
WEAK_RESIDUAL_REL = 0.05
# Overlap pixels used for the fit: this percentile of the overlap's depth confidence and above, in both passes.
OVERLAP_CONF_PERCENTILE = 50.0

PredictFn = Callable[[np.ndarray], dict[str, np.ndarray]]


def chunk_problems(size: int, overlap: int) -> list[Problem]:
    """Every problem with a chunk size / overlap pair (empty: valid)."""
    problems: list[Problem] = []
    if size < 2:
        problems.append(Problem.of("chunk_size", "must be >= 2", size))
    if overlap < 1:
        problems.append(Problem.of("overlap", "must be >= 1 (a Sim(3) needs shared frames)", overlap))
    if size >= 2 and overlap >= 1 and size <= overlap:
        problems.append(
            Problem.of(
                "chunk_size",
                f"must be larger than the overlap ({overlap}): each chunk has to add new frames",
                size,
            )
        )
    return problems


def chunk_ranges(frames: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each chunk: consecutive chunks share ``overlap`` frames (the last one may share more).

    The last chunk is shifted back to be full-sized rather than short, so no chunk is tiny.

    Raises:
        ConfigError: ``size <= overlap`` or either is out of range.
    """
    raise_problems("chunk settings", chunk_problems(size, overlap), "e.g. --chunk-size 32 --overlap 8")
    if frames <= size:
        return [(0, frames)]
    ranges: list[tuple[int, int]] = []
    start = 0
    while True:
        end = min(start + size, frames)
        if end == frames:
            ranges.append((max(0, frames - size), frames))
            break
        ranges.append((start, end))
        start = end - overlap
    return ranges


@dataclass(frozen=True)
class ChunkReport:
    """How one chunk was placed in the reconstruction."""

    index: int
    start: int
    end: int
    overlap_frames: int
    scale: float
    points: int
    inliers: int
    inlier_ratio: float
    residual_rel: float
    rmse_rel: float
    weak: bool
    transform: list[list[float]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _transform_cameras(extrinsic: np.ndarray, t: Sim3) -> np.ndarray:
    """Camera-from-chunk-world extrinsics -> camera-from-world after ``x_world = s R x_chunk + T``.

    Camera coordinates are scaled by ``s`` too (depth scales with the world), so
    ``E' = [R_e R^T | s t_e - R_e R^T T]``.
    """
    r_e = extrinsic[:, :3, :3].astype(np.float64)
    t_e = extrinsic[:, :3, 3].astype(np.float64)
    r_new = r_e @ t.rotation.T
    t_new = t.scale * t_e - r_new @ t.translation
    return np.concatenate((r_new, t_new[..., None]), axis=-1).astype(np.float32)


def _place(preds: dict[str, np.ndarray], t: Sim3) -> dict[str, np.ndarray]:
    """A chunk's predictions moved into the world frame by ``t``."""
    out = dict(preds)
    for key in ("world_points", "world_points_from_depth"):
        if key in preds:
            out[key] = t.apply(preds[key]).astype(np.float32)
    if "depth" in preds:
        out["depth"] = (preds["depth"] * t.scale).astype(np.float32)
    if "extrinsic" in preds:
        out["extrinsic"] = _transform_cameras(preds["extrinsic"], t)
        if "pose_enc" in preds:
            out["pose_enc"] = _pose_enc(out["extrinsic"], preds["intrinsic"], preds)
    return out


def _pose_enc(extrinsic: np.ndarray, intrinsic: np.ndarray, preds: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    from vggtctl.models.vggt.geometry import extri_intri_to_pose_encoding

    hw = preds["depth"].shape[1:3] if "depth" in preds else preds["images"].shape[-2:]
    enc = extri_intri_to_pose_encoding(torch.from_numpy(extrinsic), torch.from_numpy(intrinsic), tuple(hw))
    return enc.numpy().astype(np.float32)


def _overlap_points(
    chunk: dict[str, np.ndarray], merged: dict[str, np.ndarray], local: slice, world: slice
) -> tuple[np.ndarray, np.ndarray]:
    """Confident overlap pixels: (chunk-frame points, world-frame points), both ``[N, 3]``."""
    key, conf_key = ("world_points_from_depth", "depth_conf")
    if key not in chunk:
        key, conf_key = ("world_points", "world_points_conf")
    if key not in chunk:
        raise InputError(
            "chunked inference needs the depth (or point) head and the camera head",
            "use the full checkpoint, or run one pass (--chunk off) with a model that has them",
        )
    src, dst = chunk[key][local].reshape(-1, 3), merged[key][world].reshape(-1, 3)
    c_src, c_dst = chunk[conf_key][local].reshape(-1), merged[conf_key][world].reshape(-1)
    ok = np.isfinite(src).all(1) & np.isfinite(dst).all(1) & np.isfinite(c_src) & np.isfinite(c_dst)
    if not ok.any():
        return src[:0], dst[:0]
    keep = (
        ok
        & (c_src >= np.percentile(c_src[ok], OVERLAP_CONF_PERCENTILE))
        & (c_dst >= np.percentile(c_dst[ok], OVERLAP_CONF_PERCENTILE))
    )
    return src[keep], dst[keep]


def _report(index: int, rng: tuple[int, int], overlap: int, fit: Sim3Fit | None) -> ChunkReport:
    if fit is None:  # the first chunk defines the world frame
        return ChunkReport(index, rng[0], rng[1], 0, 1.0, 0, 0, 1.0, 0.0, 0.0, False, np.eye(4).tolist())
    weak = (
        fit.inlier_ratio < WEAK_INLIER_RATIO
        or fit.inliers < WEAK_MIN_POINTS
        or fit.residual_rel > WEAK_RESIDUAL_REL
    )
    return ChunkReport(
        index=index,
        start=rng[0],
        end=rng[1],
        overlap_frames=overlap,
        scale=float(fit.transform.scale),
        points=fit.points,
        inliers=fit.inliers,
        inlier_ratio=round(fit.inlier_ratio, 4),
        residual_rel=float(fit.residual_rel),
        rmse_rel=float(fit.rmse_rel),
        weak=bool(weak),
        transform=fit.transform.matrix().tolist(),
    )


def predict_chunked(
    predict_fn: PredictFn,
    images: np.ndarray,
    size: int,
    overlap: int,
    *,
    inlier_rel: float = DEFAULT_INLIER_REL,
    progress: Progress = NULL_PROGRESS,
) -> tuple[dict[str, np.ndarray], list[ChunkReport]]:
    """Predict a long sequence chunk by chunk and merge the chunks into frame 0's world frame.

    Args:
        predict_fn: ``images [s,3,H,W] -> predictions`` for one chunk (e.g. :func:`services.infer.predict`
            with the model bound); outputs without the batch dim, as ``predict`` returns them.
        images: ``[S,3,H,W]`` preprocessed frames (any array indexable by frame ranges).
        size: Frames per chunk.
        overlap: Frames shared by consecutive chunks.
        inlier_rel: Sim(3) inlier threshold relative to the overlap's extent.
        progress: Receives one line per chunk (and the weak-overlap warnings).

    Returns:
        ``(predictions for all S frames, one report per chunk)``; ``pose_enc_list`` is dropped (each
        chunk refines its cameras in its own frame) and ``pose_enc`` is re-encoded from the placed cameras.

    Raises:
        ConfigError: ``size <= overlap``.
        InputError: An overlap with too few usable points to fit a Sim(3).
    """
    s = int(images.shape[0])
    ranges = chunk_ranges(s, size, overlap)
    merged: dict[str, np.ndarray] = {}
    reports: list[ChunkReport] = []
    done = 0  # frames [0, done) are in the reconstruction
    for i, (a, b) in enumerate(ranges):
        preds = predict_fn(np.asarray(images[a:b]))
        preds.pop("pose_enc_list", None)
        shared = done - a
        fit: Sim3Fit | None = None
        if i > 0:
            src, dst = _overlap_points(preds, merged, slice(0, shared), slice(a, done))
            if len(src) < 3:
                raise InputError(
                    f"chunk {i} (frames {a}-{b - 1}): {len(src)} confident points in its {shared} overlap "
                    "frame(s), too few to align it",
                    "use a larger --overlap, or a smaller --chunk-size with more overlap",
                )
            fit = robust_sim3(src, dst, inlier_rel=inlier_rel, seed=i)
            preds = _place(preds, fit.transform)
        if not merged:
            merged = {k: np.empty((s, *v.shape[1:]), dtype=v.dtype) for k, v in preds.items()}
        for k, v in preds.items():
            if k in merged:
                merged[k][done:b] = v[shared:]
        report = _report(i, (a, b), max(shared, 0), fit)
        reports.append(report)
        progress.log(
            f"chunk {i + 1}/{len(ranges)}: frames {a}-{b - 1}"
            + (
                f", {report.overlap_frames} shared, scale {report.scale:.4g}, "
                f"residual {report.residual_rel:.2%} of the overlap's extent, "
                f"{report.inlier_ratio:.0%} inliers of {report.points:,} points"
                if fit is not None
                else " (defines the world frame: frame 0's camera)"
            )
        )
        if report.weak:
            progress.log(
                f"Warning: chunk {i + 1} overlaps weakly with the frames before it "
                f"({report.inliers:,} inliers, {report.inlier_ratio:.0%}, residual {report.residual_rel:.2%}): "
                "its placement may be off; use a larger --overlap"
            )
        done = b
    return merged, reports
