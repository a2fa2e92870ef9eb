"""`vggtctl view`: what it reads from infer / COLMAP / evaluate outputs, the panel's filters, the
server's life (URL, SIGINT 130, SIGTERM 0), bad input and the HTML snapshot."""

from __future__ import annotations

import base64
import json
import re
import signal
import socket
from pathlib import Path

import numpy as np
import pytest

from tests.helpers_cli import run_cli
from tests.servers import get, served
from vggtctl.errors import InputError
from vggtctl.io.colmap import read_model
from vggtctl.io.predictions import load_predictions
from vggtctl.services.serving import PortInUseError
from vggtctl.services.view_scene import load_scene
from vggtctl.services.viewer import ViewConfig, open_viewer


def test_predictions_scene_holds_every_frame_and_both_point_sources(tiny_run: Path) -> None:
    preds = load_predictions(tiny_run)
    scene = load_scene(tiny_run)
    s, _, h, w = preds["images"].shape
    assert scene.kind == "predictions" and len(scene.frames) == s
    assert set(scene.points) == {"depth", "head"}
    for i, f in enumerate(scene.frames):
        np.testing.assert_allclose(f.extrinsic, preds["extrinsic"][i], rtol=0, atol=1e-6)
        np.testing.assert_allclose(f.K, preds["intrinsic"][i], rtol=0, atol=1e-4)
        assert f.hw == (h, w) and f.image is not None and f.image.dtype == np.uint8
    depth = scene.points["depth"]
    # crop mode, no padding: every finite pixel of every frame, with its own colour and confidence
    n = int(np.isfinite(preds["world_points_from_depth"]).all(-1).sum())
    assert len(depth) == n == s * h * w
    assert np.bincount(depth.frame, minlength=s).tolist() == [h * w] * s
    np.testing.assert_array_equal(np.sort(depth.conf), np.sort(preds["depth_conf"].reshape(-1)))


def test_max_points_is_a_seeded_subset(tiny_run: Path) -> None:
    a, b = load_scene(tiny_run, max_points=1000), load_scene(tiny_run, max_points=1000)
    assert len(a.points["depth"]) == len(a.points["head"]) == 1000
    np.testing.assert_array_equal(a.points["depth"].xyz, b.points["depth"].xyz)


def test_confidence_slider_and_frame_toggles_filter_the_points(tiny_run: Path) -> None:
    viewer = open_viewer(ViewConfig(str(tiny_run), port=0, conf_threshold="50%"))
    try:
        conf = viewer.scene.points["depth"].conf
        shown = viewer.visible_points()
        kept = sum(len(x) for x, _ in shown.values())
        assert kept == int((conf >= np.percentile(conf, 50)).sum())
        viewer.conf.value = 90.0
        assert sum(len(x) for x, _ in viewer.visible_points().values()) == int(
            (conf >= np.percentile(conf, 90)).sum()
        )
        viewer.set_frame_visible(1, False)
        assert 1 not in viewer.visible_points() and not viewer._frustums[1].visible
        assert viewer._frustums[0].visible
        viewer.source.value = "point head"
        head_conf = viewer.scene.points["head"].conf
        frame = viewer.scene.points["head"].frame
        want = int(((head_conf >= np.percentile(head_conf, 90)) & (frame != 1)).sum())
        assert sum(len(x) for x, _ in viewer.visible_points().values()) == want
    finally:
        viewer.stop()


def test_frustums_sit_at_the_camera_centres_looking_along_their_z(tiny_run: Path) -> None:
    import viser.transforms as vtf

    viewer = open_viewer(ViewConfig(str(tiny_run), port=0))
    try:
        for f, handle in zip(viewer.scene.frames, viewer._frustums, strict=True):
            R, t = f.extrinsic[:, :3], f.extrinsic[:, 3]
            np.testing.assert_allclose(handle.position, -R.T @ t, atol=1e-5)
            np.testing.assert_allclose(vtf.SO3(np.asarray(handle.wxyz)).as_matrix(), R.T, atol=1e-5)
    finally:
        viewer.stop()


def test_absolute_threshold_is_a_value_not_a_percentile(tiny_run: Path) -> None:
    viewer = open_viewer(ViewConfig(str(tiny_run), port=0, conf_threshold="1.5"))
    try:
        conf = viewer.scene.points["depth"].conf
        assert sum(len(x) for x, _ in viewer.visible_points().values()) == int((conf >= 1.5).sum())
    finally:
        viewer.stop()


def test_colmap_folder_shows_its_cameras_images_and_points(tiny_run: Path) -> None:
    cameras, images, points = read_model(tiny_run / "colmap")
    scene = load_scene(tiny_run / "colmap")
    assert scene.kind == "colmap" and len(scene.frames) == len(images)
    assert len(scene.points["colmap"]) == len(points)
    by_name = {i.name: i for i in images.values()}
    for f in scene.frames:
        img = by_name[f.name]
        np.testing.assert_allclose(f.extrinsic, img.extrinsic(), atol=1e-9)
        assert f.hw == (cameras[img.camera_id].height, cameras[img.camera_id].width)
        assert f.image is not None  # found through meta.json's sources


def test_evaluate_error_cloud_keeps_its_error_per_point(tmp_path: Path) -> None:
    from vggtctl.services.eval_vis import save_error_cloud

    rng = np.random.default_rng(3)
    xyz, err = rng.normal(size=(500, 3)).astype(np.float32), rng.uniform(0, 1, 500).astype(np.float32)
    save_error_cloud(tmp_path / "synth_000" / "pointcloud_error.ply", xyz, err)
    scene = load_scene(tmp_path / "synth_000")
    assert scene.kind == "error cloud" and list(scene.points) == ["error"]
    np.testing.assert_allclose(scene.points["error"].error, err)
    np.testing.assert_allclose(scene.points["error"].xyz, xyz)
    # error >= 0.5 m is red in the turbo map, 0 is blue
    red = scene.points["error"].rgb[err >= 0.5]
    assert (red[:, 0] > red[:, 2]).all()


def test_folder_without_predictions_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    r = run_cli("view", tmp_path)
    assert r.exit_code == 1
    assert f"Error: {tmp_path} holds no predictions.npz, COLMAP model" in r.stderr
    assert "Hint: run `vggtctl infer IMAGES --out DIR` first" in r.stderr
    with pytest.raises(InputError, match="does not exist"):
        load_scene(tmp_path / "missing")


def test_port_in_use_is_refused_not_moved(tiny_run: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1 is in use"):
            open_viewer(ViewConfig(str(tiny_run), port=port))
        r = run_cli("view", tiny_run, "--port", port)
    assert r.exit_code == 1 and f"--port {port + 1}" in r.stderr


def test_bad_conf_threshold_is_a_usage_error(tiny_run: Path) -> None:
    r = run_cli("view", tiny_run, "--conf-threshold", "150%")
    assert r.exit_code == 2 and "Error: --conf-threshold '150%'" in r.stderr


def test_snapshot_is_one_html_file_with_the_scene_inlined(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "scene.html"
    r = run_cli("view", tiny_run, "--max-points", 5000, "--snapshot", out, "--json")
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    html = out.read_text()
    assert info["bytes"] == out.stat().st_size and info["frames"] == 6 and info["points"] == 10000
    embedded = re.search(r'window.__VISER_EMBED_DATA__="([A-Za-z0-9+/=]+)"', html)
    assert embedded is not None
    # the point clouds travel inside the page: at least 5000 float32 xyz for the shown half
    assert len(base64.b64decode(embedded.group(1))) > 2500 * 12
    assert "<script" in html and 'src="http' not in html  # nothing fetched from elsewhere


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_server_prints_its_url_serves_the_page_and_stops_on_signals(
    tiny_run: Path, sig: signal.Signals, code: int
) -> None:
    with served("view", tiny_run, "--port", 0) as (proc, url):
        assert url.startswith("http://127.0.0.1:")
        status, body = get(url)
        assert status == 200 and '<div id="root">' in body.replace("'", '"')
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err.decode()
    assert ("Ctrl-C" if code == 130 else "SIGTERM") in err.decode()
    port = int(url.rsplit(":", 1)[1].strip("/"))
    with socket.socket() as s:  # stopped for real: the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
