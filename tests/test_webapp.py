"""`vggtctl app`: one request through infer's own pipeline (model loaded once), the GLB it shows, the
downloads, refused uploads, and the server's life (URL, SIGINT 130, SIGTERM 0, port in use)."""

from __future__ import annotations

import signal
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.helpers_cli import run_cli
from tests.servers import get, served
from vggtctl.errors import InputError
from vggtctl.io.glb import frustum_lines, glb_bytes
from vggtctl.io.ply import read_ply
from vggtctl.services.webapp_run import AppRequest, ModelCache, check_uploads, reconstruct


def _images(synthetic_root: Path) -> list[str]:
    return sorted(str(p) for p in (synthetic_root / "synth_000/images/dslr_images_undistorted").glob("*.JPG"))


def test_frustum_corners_are_the_image_corners_seen_at_depth_scale() -> None:
    rng = np.random.default_rng(0)
    from scipy.spatial.transform import Rotation

    R = Rotation.from_rotvec(rng.normal(size=3)).as_matrix()
    t = rng.normal(size=3)
    K = np.array([[120.0, 0, 84], [0, 110.0, 56], [0, 0, 1]])
    segs = frustum_lines(np.c_[R, t][None], K[None], [(112, 168)], scale=0.7)
    assert segs.shape == (8, 2, 3)
    centre = -R.T @ t
    np.testing.assert_allclose(segs[0::2, 0], np.tile(centre, (4, 1)), atol=1e-5)
    corners = segs[0::2, 1].astype(np.float64)
    cam = (corners - centre) @ R.T  # world -> camera
    np.testing.assert_allclose(cam[:, 2], 0.7, atol=1e-5)
    px = cam[:, :2] / cam[:, 2:] * [K[0, 0], K[1, 1]] + K[:2, 2]
    np.testing.assert_allclose(px, [[0, 0], [168, 0], [168, 112], [0, 112]], atol=1e-3)


def test_glb_reads_back_in_trimesh_with_its_points_colours_and_lines(tmp_path: Path) -> None:
    import trimesh

    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(777, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(777, 3), dtype=np.uint8)
    lines = rng.normal(size=(16, 2, 3)).astype(np.float32)
    path = tmp_path / "s.glb"
    path.write_bytes(glb_bytes(xyz, rgb, lines))
    scene = trimesh.load(path)
    clouds = [g for g in scene.geometry.values() if isinstance(g, trimesh.PointCloud)]
    paths = [g for g in scene.geometry.values() if isinstance(g, trimesh.path.Path3D)]
    assert len(clouds) == 1 and len(paths) == 1
    # OpenCV (y down, z forward) -> glTF (y up, z back): y and z flip
    np.testing.assert_allclose(clouds[0].vertices, xyz * [1, -1, -1], atol=1e-6)
    np.testing.assert_array_equal(np.asarray(clouds[0].colors)[:, :3], rgb)
    assert len(paths[0].vertices) == 32


def test_uploads_that_are_not_images_are_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "a.jpg").write_bytes(b"")
    with pytest.raises(InputError, match=r"not an image or a video: notes\.txt") as e:
        check_uploads([str(tmp_path / "a.jpg"), str(tmp_path / "notes.txt")])
    assert ".jpg" in (e.value.hint or "") and ".mp4" in (e.value.hint or "")
    with pytest.raises(InputError, match="no files uploaded"):
        check_uploads([])
    with pytest.raises(InputError, match="either images or one video"):
        check_uploads([str(tmp_path / "a.jpg"), str(tmp_path / "walk.mp4")])


def test_a_jpeg_that_is_not_an_image_gets_infer_s_message(tmp_path: Path, tiny_checkpoint: Path) -> None:
    fake = tmp_path / "photo.jpg"
    fake.write_text("not a jpeg")
    with pytest.raises(InputError, match="photo.jpg"):
        reconstruct(
            AppRequest([str(fake)], model=str(tiny_checkpoint), device="cpu"), tmp_path / "r", ModelCache()
        )


@pytest.mark.slow
def test_two_requests_load_the_model_once_and_write_every_download(
    synthetic_root: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    import trimesh

    cache = ModelCache()
    req = AppRequest(_images(synthetic_root)[:3], model=str(tiny_checkpoint), device="cpu", dtype="fp32")
    first = reconstruct(req, tmp_path / "r1", cache)
    second = reconstruct(req, tmp_path / "r2", cache)
    assert cache.loads == {str(tiny_checkpoint): 1}
    assert first.frames == 3 and "3 frames at 168x112" in first.summary
    # the same inputs, the same model: the same cloud twice
    np.testing.assert_array_equal(read_ply(first.ply)["x"], read_ply(second.ply)["x"])
    with np.load(first.npz) as z:
        assert z["extrinsic"].shape == (3, 3, 4)
    with zipfile.ZipFile(first.colmap_zip) as z:
        assert sorted(z.namelist()) == ["colmap/cameras.bin", "colmap/images.bin", "colmap/points3D.bin"]
    scene = trimesh.load(first.glb)
    cloud = next(g for g in scene.geometry.values() if isinstance(g, trimesh.PointCloud))
    frusta = next(g for g in scene.geometry.values() if isinstance(g, trimesh.path.Path3D))
    assert len(cloud.vertices) == first.points == len(read_ply(first.ply)["x"])
    assert len(frusta.vertices) == 3 * 16  # 8 segments per camera
    # infer's frame names are the uploads' own names, not Gradio's hashed temp folders
    assert (Path(first.run_dir) / "inputs" / "DSC_0000.JPG").is_file()


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_cli("app", "--model", "tiny", "--port", port)
    assert r.exit_code == 1
    assert f"Error: port {port} on 127.0.0.1 is in use" in r.stderr and "Hint:" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_app_serves_its_page_and_stops_on_signals(tmp_path: Path, sig: signal.Signals, code: int) -> None:
    with served("app", "--model", "tiny", "--port", 0, "--out", tmp_path / "runs") as (proc, url):
        assert url.startswith("http://127.0.0.1:")
        status, body = get(url)
        assert status == 200 and "vggtctl app" in body
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err.decode()
    assert ("Ctrl-C" if code == 130 else "SIGTERM") in err.decode()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_concurrent_requests_wait_in_the_queue_and_share_one_model(
    synthetic_root: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from gradio_client import Client, handle_file

    from vggtctl.services.webapp import AppConfig, open_app

    model = str(tiny_checkpoint)
    app = open_app(AppConfig(port=0, models=[model], device="cpu", dtype="fp32", out=tmp_path / "runs"))
    try:
        client = Client(app.url, verbose=False)
        files = [handle_file(p) for p in _images(synthetic_root)[:2]]
        jobs = [
            client.submit(files, model, "crop", "depth", "50%", api_name="/reconstruct") for _ in range(2)
        ]
        results = [job.result(timeout=240) for job in jobs]
    finally:
        app.stop()
    assert all(str(r[0]).startswith("**Done.** 2 frames") for r in results), results
    (_, first_end), (second_start, _) = sorted(app.request_times)
    assert first_end <= second_start  # one ran after the other, never both at once
    assert app.cache.loads == {model: 1}
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["run_0001", "run_0002"]
