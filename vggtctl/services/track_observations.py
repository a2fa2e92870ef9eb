"""2-D observations for bundle adjustment from VGGT's track head, with query points on every frame.

The track head follows points of frame 0. To spread queries over every frame without another aggregator
pass per frame, the aggregator and the track head's feature extractor run once; the tracker (which only
correlates the first frame's features with the others') then runs once per query frame ``q`` on the
feature maps reordered so that ``q`` comes first, and the tracks are put back in frame order.

Each query is a confident depth pixel on a grid over the frame's image region (not padding); its 3-D
point is the depth map unprojected there. Its observations: the query pixel in frame ``q`` and the track
in every other frame where the head's visibility and confidence reach their thresholds and the track
lands inside that frame's image region. These observations are independent of the camera head, which is
what lets a bundle adjustment correct the cameras.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vggtctl.io.image_geometry import ImageGeometry
from vggtctl.progress import NULL_PROGRESS, Progress
from vggtctl.runtime.precision import autocast
from vggtctl.services.colmap_tracks import Observations, valid_region

QUERIES_PER_FRAME = 256
VIS_THRESHOLD = 0.2  # the reference demo's vis_thresh
TRACK_CONF_THRESHOLD = 0.2


@dataclass
class TrackedPoints:
    """Points from track-head queries and their observations (model pixels)."""

    xyz: np.ndarray  # (N, 3) float64
    rgb: np.ndarray  # (N, 3) uint8
    observations: Observations
    query_frame: np.ndarray  # (N,) int64


def unavailable_reason(model: Any, images_hw: tuple[int, int]) -> str | None:
    """Why the track head cannot give observations for frames of ``images_hw`` (None: it can)."""
    head = getattr(model, "track_head", None)
    if head is None:
        return "the checkpoint has no track head"
    if min(images_hw) < head.min_image_side:
        return (
            f"frames of {images_hw[1]}x{images_hw[0]} are smaller than the track head's "
            f"{head.min_image_side} px minimum side"
        )
    return None


def grid_queries(
    conf: np.ndarray, geom: ImageGeometry, count: int, finite: np.ndarray | None = None
) -> np.ndarray:
    """Up to ``count`` integer pixels ``[N, 2]`` (x, y): the most confident one per cell of a grid.

    The grid has at least ``count`` cells over the image region (not padding), the most confident cell
    winners are kept, so the queries spread over the whole frame instead of gathering where confidence peaks.
    """
    mask = valid_region(geom)
    if finite is not None:
        mask &= finite
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    side = math.sqrt((x1 - x0) * (y1 - y0) / max(count, 1))
    nx = max(1, math.ceil((x1 - x0) / side))
    ny = max(1, math.ceil((y1 - y0) / side))
    cell = ((ys - y0) * ny // (y1 - y0)) * nx + (xs - x0) * nx // (x1 - x0)
    c = conf[ys, xs]
    order = np.lexsort((-c, cell))  # by cell, most confident first
    first = np.ones(len(order), dtype=bool)
    first[1:] = cell[order][1:] != cell[order][:-1]
    best = order[first]
    best = best[np.argsort(-c[best], kind="stable")][:count]
    return np.stack([xs[best], ys[best]], axis=1).astype(np.int64)


def track_observations(
    model: Any,
    images: np.ndarray,
    preds: dict[str, np.ndarray],
    geoms: Sequence[ImageGeometry],
    *,
    device: str = "cpu",
    dtype: Any = None,
    queries_per_frame: int = QUERIES_PER_FRAME,
    vis_threshold: float = VIS_THRESHOLD,
    conf_threshold: float = TRACK_CONF_THRESHOLD,
    progress: Progress = NULL_PROGRESS,
) -> TrackedPoints:
    """Track query points of every frame through all frames (see the module docstring).

    Args:
        model: A VGGT with a track head (check :func:`unavailable_reason` first).
        images: ``[S, 3, H, W]`` the preprocessed frames the prediction came from.
        preds: that prediction (``world_points_from_depth``, ``depth_conf`` are used).
        geoms: per-frame geometry.
        device: where the model is; ``dtype``: autocast precision as for :func:`predict`.
        queries_per_frame: queries on each frame.
        vis_threshold: minimum visibility of a tracked observation.
        conf_threshold: minimum track confidence of a tracked observation.
        progress: receives one line per query frame batch.
    """
    import torch

    from vggtctl.models.vggt.inputs import normalize_layers

    s, _, h, w = images.shape
    head = model.track_head
    x = torch.as_tensor(np.asarray(images, dtype=np.float32)).to(device)[None]
    with torch.inference_mode(), autocast(device, dtype):
        layers = normalize_layers(model.config.dpt_layers, model.config.depth)
        # The same calls, under the same autocast, as the model's own track path (VGGT.forward).
        tokens = model.aggregator.run(x, layers)
        fmaps = head.feature_extractor(tokens, x, model.aggregator.patch_start_idx)
        del tokens
        points = preds["world_points_from_depth"]
        conf = preds["depth_conf"]
        colours = np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)
        xyz_all, rgb_all, qf_all = [], [], []
        obs_point, obs_frame, obs_xy = [], [], []
        masks = [valid_region(g) for g in geoms]
        n_done = 0
        for q in range(s):
            finite = np.isfinite(points[q]).all(axis=-1) & np.isfinite(conf[q])
            qxy = grid_queries(conf[q], geoms[q], queries_per_frame, finite)
            if len(qxy) == 0:
                continue
            order = [q, *[j for j in range(s) if j != q]]
            query_t = torch.as_tensor(qxy.astype(np.float32)).to(device)[None]
            coords, vis, tconf = head.tracker(query_t, fmaps[:, order], iters=head.iters)
            track = np.empty((s, len(qxy), 2))
            track[order] = coords[-1][0].float().cpu().numpy()
            vis_np = np.empty((s, len(qxy)))
            vis_np[order] = vis[0].float().cpu().numpy()
            conf_np = np.ones((s, len(qxy)))
            if tconf is not None:
                conf_np[order] = tconf[0].float().cpu().numpy()
            ids = n_done + np.arange(len(qxy))
            xyz_all.append(points[q, qxy[:, 1], qxy[:, 0]].astype(np.float64))
            rgb_all.append(colours[q][:, qxy[:, 1], qxy[:, 0]].T)
            qf_all.append(np.full(len(qxy), q, dtype=np.int64))
            obs_point.append(ids)
            obs_frame.append(np.full(len(qxy), q, dtype=np.int64))
            obs_xy.append(qxy.astype(np.float64))
            for j in range(s):
                if j == q:
                    continue
                col, row = np.rint(track[j, :, 0]), np.rint(track[j, :, 1])
                ok = (vis_np[j] >= vis_threshold) & (conf_np[j] >= conf_threshold)
                ok &= np.isfinite(track[j]).all(axis=1) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
                sel = np.flatnonzero(ok)
                sel = sel[masks[j][row[sel].astype(np.int64), col[sel].astype(np.int64)]]
                obs_point.append(ids[sel])
                obs_frame.append(np.full(len(sel), j, dtype=np.int64))
                obs_xy.append(track[j, sel])
            n_done += len(qxy)
        progress.log(f"tracks: {n_done} query points over {s} frames")
    point = np.concatenate(obs_point) if obs_point else np.zeros(0, dtype=np.int64)
    frame = np.concatenate(obs_frame) if obs_frame else np.zeros(0, dtype=np.int64)
    xy = np.concatenate(obs_xy) if obs_xy else np.zeros((0, 2))
    order = np.lexsort((frame, point))
    return TrackedPoints(
        xyz=np.concatenate(xyz_all) if xyz_all else np.zeros((0, 3)),
        rgb=np.concatenate(rgb_all) if rgb_all else np.zeros((0, 3), dtype=np.uint8),
        observations=Observations(point[order], frame[order], xy[order]),
        query_frame=np.concatenate(qf_all) if qf_all else np.zeros(0, dtype=np.int64),
    )
