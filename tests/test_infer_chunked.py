"""Chunked inference (services/infer_chunked.py): chunk layout, exact gluing of known geometry, and the tiny
model on a 42-view synthetic scene against one pass over the same frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vggtctl.errors import ConfigError
from vggtctl.services.infer_chunked import chunk_ranges, predict_chunked


def test_chunk_ranges_cover_every_frame_with_the_overlap() -> None:
    assert chunk_ranges(10, 4, 1) == [(0, 4), (3, 7), (6, 10)]
    assert chunk_ranges(11, 4, 2) == [(0, 4), (2, 6), (4, 8), (6, 10), (7, 11)]  # last one shifted back, full
    assert chunk_ranges(5, 8, 2) == [(0, 5)]
    for s, n, k in [(100, 16, 4), (41, 12, 3), (1000, 200, 20)]:
        r = chunk_ranges(s, n, k)
        assert r[0][0] == 0 and r[-1][1] == s
        assert all(b - a == n for a, b in r)
        assert all(r[i + 1][0] <= r[i][1] - k for i in range(len(r) - 1))  # at least k shared frames


@pytest.mark.parametrize(("size", "overlap"), [(4, 4), (4, 6), (1, 0), (8, 0)])
def test_chunk_size_not_above_overlap_refused(size: int, overlap: int) -> None:
    with pytest.raises(ConfigError, match="chunk_size|overlap"):
        chunk_ranges(20, size, overlap)


# ---------------------------------------------------------------- exact gluing of known geometry


def _scene(frames: int, h: int = 12, w: int = 16) -> dict[str, np.ndarray]:
    """Cameras on an arc looking at a bumpy surface; depth, extrinsics and the world points they give."""
    rng = np.random.default_rng(0)
    k = np.array([[20.0, 0, w / 2], [0, 20.0, h / 2], [0, 0, 1]])
    ext, depth = [], []
    for i in range(frames):
        r = Rotation.from_rotvec([0.02 * i, 0.05 * np.sin(i / 3), 0.01]).as_matrix()
        t = np.array([0.1 * i, 0.02 * i, 0.3])
        ext.append(np.concatenate((r, t[:, None]), 1))
        depth.append(2.0 + 0.5 * rng.random((h, w, 1)))
    from vggtctl.models.vggt.geometry import unproject_depth_map_to_point_map

    ext_a, depth_a = np.stack(ext), np.stack(depth)
    k_a = np.repeat(k[None], frames, 0)
    return {
        "extrinsic": ext_a.astype(np.float32),
        "intrinsic": k_a.astype(np.float32),
        "depth": depth_a.astype(np.float32),
        "depth_conf": (1 + rng.random((frames, h, w))).astype(np.float32),
        "world_points_from_depth": unproject_depth_map_to_point_map(depth_a, ext_a, k_a),
    }


def _chunk_view(truth: dict[str, np.ndarray], a: int, b: int) -> dict[str, np.ndarray]:
    """What an ideal model returns for frames [a, b): the truth in frame a's camera frame, at its own scale."""
    from vggtctl.models.vggt.geometry import closed_form_inverse_se3, unproject_depth_map_to_point_map

    s = 0.5 + 0.1 * a  # each chunk has its own scale
    e0 = np.concatenate((truth["extrinsic"][a].astype(np.float64), [[0, 0, 0, 1]]))
    # world -> chunk frame: x_c = s * (R0 x + t0); a camera's extrinsic becomes E_i E0^-1, translation scaled.
    inv0 = closed_form_inverse_se3(e0[None])[0]
    ext = []
    for e in truth["extrinsic"][a:b].astype(np.float64):
        rel = np.concatenate((e, [[0, 0, 0, 1]])) @ inv0
        rel[:3, 3] *= s
        ext.append(rel[:3])
    ext_a = np.stack(ext)
    depth = truth["depth"][a:b] * s
    k = truth["intrinsic"][a:b]
    return {
        "extrinsic": ext_a.astype(np.float32),
        "intrinsic": k,
        "depth": depth.astype(np.float32),
        "depth_conf": truth["depth_conf"][a:b],
        "world_points_from_depth": unproject_depth_map_to_point_map(depth, ext_a, k),
    }


def test_ideal_chunks_are_glued_back_exactly_in_frame_0s_world() -> None:
    truth = _scene(23)
    calls: list[tuple[int, int]] = []
    index = np.arange(23)

    def predict_fn(ids: np.ndarray) -> dict[str, np.ndarray]:
        a, b = int(ids[0]), int(ids[-1]) + 1
        calls.append((a, b))
        return _chunk_view(truth, a, b)

    merged, reports = predict_chunked(predict_fn, index, size=8, overlap=3)
    assert calls == chunk_ranges(23, 8, 3)
    # frame 0's camera is the world and the scale is chunk 0's
    ref = _chunk_view(truth, 0, 23)
    np.testing.assert_allclose(merged["world_points_from_depth"], ref["world_points_from_depth"], atol=2e-4)
    np.testing.assert_allclose(merged["extrinsic"], ref["extrinsic"], atol=2e-5)
    np.testing.assert_allclose(merged["depth"], ref["depth"], rtol=1e-5)
    for r in reports[1:]:
        assert r.residual_rel < 1e-5 and r.inlier_ratio == 1.0 and not r.weak
        assert r.scale == pytest.approx(0.5 / (0.5 + 0.1 * r.start), rel=1e-5)
    assert reports[0].scale == 1.0 and reports[0].overlap_frames == 0


def test_a_corrupted_overlap_is_flagged_weak() -> None:
    truth = _scene(12)
    rng = np.random.default_rng(1)

    def predict_fn(ids: np.ndarray) -> dict[str, np.ndarray]:
        a, b = int(ids[0]), int(ids[-1]) + 1
        out = _chunk_view(truth, a, b)
        if a > 0:  # the new chunk disagrees with the reconstruction on its overlap frames
            wp = out["world_points_from_depth"]
            out["world_points_from_depth"] = wp + rng.normal(scale=1.0, size=wp.shape).astype(np.float32)
        return out

    logs: list[str] = []

    class Log:
        def log(self, msg: str) -> None:
            logs.append(msg)

    _, reports = predict_chunked(predict_fn, np.arange(12), size=8, overlap=2, progress=Log())  # type: ignore[arg-type]
    assert reports[1].weak and reports[1].residual_rel > 0.05
    assert any(m.startswith("Warning: chunk 2 overlaps weakly") for m in logs)


# ---------------------------------------------------------------- the tiny model on 42 synthetic views


@pytest.fixture(scope="module")
def scene_images(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    from vggtctl.data.preprocess import open_image, preprocess_images
    from vggtctl.services.synthetic import generate_scenes

    out = tmp_path_factory.mktemp("syn42")
    generate_scenes(out, scenes=1, views=42, seed=0, width=160, height=120)
    files = sorted((out / "synth_000" / "images" / "dslr_images_undistorted").iterdir())
    assert len(files) == 42
    # 112x84 model input (48 patches a frame) keeps the 42-frame one pass and the 4 chunks cheap.
    images, _ = preprocess_images([open_image(p) for p in files], "crop", 112)
    return images


@pytest.mark.slow
@pytest.mark.timeout(900)  # ~15 s on a quiet 2-core machine; minutes when it is shared
def test_tiny_chunked_agrees_with_one_pass_up_to_the_reported_residual(
    scene_images: np.ndarray, tiny_checkpoint: Path
) -> None:
    from vggtctl import load_model
    from vggtctl.services.infer import predict

    model = load_model(tiny_checkpoint)

    def one(x: np.ndarray) -> dict[str, np.ndarray]:
        return predict(model, x)

    full = one(scene_images)
    merged, reports = predict_chunked(one, scene_images, size=16, overlap=6)
    assert [(r.start, r.end) for r in reports] == [(0, 16), (10, 26), (20, 36), (26, 42)]
    # Chunk 0 is frame 0's world: bit-identical to one pass over its own frames.
    first = one(scene_images[:16])
    np.testing.assert_array_equal(merged["world_points_from_depth"][:16], first["world_points_from_depth"])
    np.testing.assert_array_equal(merged["extrinsic"][:16], first["extrinsic"])
    worst = max(r.residual_rel for r in reports)
    assert 0 < worst < 0.1
    # Against one pass over all 42 frames, after the one similarity both reconstructions are free to differ
    # by (VGGT fixes frame 0's camera, not the scale), points agree to the reported residual.
    a = full["world_points_from_depth"].reshape(-1, 3).astype(np.float64)
    b = merged["world_points_from_depth"].reshape(-1, 3).astype(np.float64)
    from vggtctl.services.sim3 import weighted_umeyama

    gauge = weighted_umeyama(b, a)
    assert gauge.scale == pytest.approx(1.0, abs=0.05)
    extent = np.median(np.linalg.norm(a - np.median(a, axis=0), axis=1))
    d = np.linalg.norm(gauge.apply(b) - a, axis=1) / extent
    assert np.median(d) <= worst
    per_frame = np.median(d.reshape(42, -1), axis=1)
    assert per_frame.max() <= 4 * worst
