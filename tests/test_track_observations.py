"""Issue 19 §3: track-head observations with queries on every frame (one aggregator pass, tracker per frame)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vggtctl.io.image_geometry import ImageGeometry
from vggtctl.services.colmap_tracks import valid_region
from vggtctl.services.track_observations import grid_queries, track_observations, unavailable_reason


def test_grid_queries_spread_over_the_image_region() -> None:
    geom = ImageGeometry((100, 168), (100, 168), (0, 34), (168, 168))  # 34 rows of padding above and below
    conf = np.random.default_rng(0).random((168, 168))
    q = grid_queries(conf, geom, 64)
    assert 48 <= len(q) <= 64 and len({tuple(p) for p in q}) == len(q)
    assert valid_region(geom)[q[:, 1], q[:, 0]].all()  # never in the padding
    # Spread: every quarter of the image region holds some queries.
    for xs in ((0, 84), (84, 168)):
        for ys in ((34, 84), (84, 134)):
            inside = (q[:, 0] >= xs[0]) & (q[:, 0] < xs[1]) & (q[:, 1] >= ys[0]) & (q[:, 1] < ys[1])
            assert inside.sum() >= 8


@pytest.mark.slow
def test_frame_zero_queries_match_the_models_own_track_head(tiny_checkpoint: Path) -> None:
    import vggtctl
    from vggtctl.services.infer import predict

    model = vggtctl.load_model(tiny_checkpoint)
    assert unavailable_reason(model, (112, 168)) is not None  # below the 128 px minimum side
    assert unavailable_reason(model, (168, 168)) is None
    images = np.random.default_rng(1).random((3, 3, 168, 168), dtype=np.float32)
    geoms = [ImageGeometry((168, 168), (168, 168), (0, 0), (168, 168))] * 3
    preds = predict(model, images)
    tracked = track_observations(model, images, preds, geoms, queries_per_frame=6, vis_threshold=0.0,
                                 conf_threshold=0.0)  # fmt: skip
    assert np.bincount(tracked.query_frame).tolist() == [6, 6, 6]
    obs = tracked.observations
    first = np.flatnonzero(tracked.query_frame == 0)
    queries = obs.xy[(obs.frame == 0) & np.isin(obs.point, first)]
    own = predict(model, images, query_points=queries)["track"]  # [S, N, 2]: the model's frame-0 tracks
    for j in (1, 2):
        sel = (obs.frame == j) & np.isin(obs.point, first)
        np.testing.assert_allclose(obs.xy[sel], own[j, obs.point[sel] - first[0]], atol=1e-4)
    # Every query's 3-D point is its depth unprojected, and its own frame observes it at the query pixel.
    for k in range(len(tracked.xyz)):
        f = tracked.query_frame[k]
        x, y = obs.xy[(obs.point == k) & (obs.frame == f)][0].astype(int)
        np.testing.assert_array_equal(tracked.xyz[k], preds["world_points_from_depth"][f, y, x])
