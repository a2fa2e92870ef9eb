"""`vggtctl infer` end to end on the tiny weights; every written file is read back and checked."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vggtctl.cli.app import app
from vggtctl.data.preprocess import ImageGeometry, intrinsics_to_original
from vggtctl.io.colmap import model_format, qvec_to_rotmat, read_model
from vggtctl.io.ply import read_ply
from vggtctl.io.predictions import geometries_from_predictions, load_predictions
from vggtctl.services.infer import select_points

runner = CliRunner()


def _cpu_auto_dtype() -> str:
    """What ``--dtype auto`` must pick on this CPU: bf16 only with a native-bf16 flag in /proc/cpuinfo."""
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").is_file() else set()
    if not flags:
        from vggtctl.runtime.precision import probe_cpu_bf16

        return "bfloat16" if probe_cpu_bf16()["speedup"] > 1 else "float32"
    return "bfloat16" if flags & {"amx_bf16", "avx512_bf16", "bf16"} else "float32"


def _images(folder: Path, n: int = 3, size: tuple[int, int] = (224, 168)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    for i in range(n):
        ext = ".PNG" if i == 1 else ".png"  # extensions are matched case-insensitively
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
            folder / f"view_{i}{ext}"
        )
    (folder / "notes.txt").write_text("not an image")
    return folder


def _invoke(*args: Any) -> Any:
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("infer")
    images = _images(base / "images")
    out = base / "out"
    r = _invoke("infer", images, "--model", tiny_checkpoint, "--out", out, "--json")
    assert r.exit_code == 0, r.stderr
    return {"result": json.loads(r.stdout), "out": out, "stderr": r.stderr, "images": images}


def test_summary_json_and_stage_timings(run: dict[str, Any]) -> None:
    res = run["result"]
    assert res["frames"] == 3 and res["image_size_hw"] == [126, 168]  # 224x168 at target 168: 4:3 -> 168x126
    assert res["device"] == "cpu" and res["dtype"] == _cpu_auto_dtype() and res["preset"] == "tiny"
    assert set(res["files"]) == {"npz", "ply", "colmap", "meta"}
    for stage in (
        "collect inputs",
        "load model",
        "load images",
        "forward",
        "write npz",
        "write ply",
        "write colmap",
    ):
        assert stage in res["timings_s"] and f"[{stage}]" in run["stderr"]


def test_predictions_npz(run: dict[str, Any]) -> None:
    p = load_predictions(run["out"])
    s, h, w = 3, 126, 168
    shapes = {"pose_enc": (s, 9), "pose_enc_list": (4, s, 9), "depth": (s, h, w, 1), "depth_conf": (s, h, w),
              "world_points": (s, h, w, 3), "world_points_conf": (s, h, w), "images": (s, 3, h, w),
              "extrinsic": (s, 3, 4), "intrinsic": (s, 3, 3), "world_points_from_depth": (s, h, w, 3),
              "orig_hw": (s, 2), "scale_xy": (s, 2), "offset_xy": (s, 2)}  # fmt: skip
    for key, shape in shapes.items():
        assert p[key].shape == shape, key
    assert p["image_size_hw"].tolist() == [h, w]
    assert [Path(f).name for f in p["source_files"]] == ["view_0.png", "view_1.PNG", "view_2.png"]
    assert p["orig_hw"].tolist() == [[168, 224]] * 3
    np.testing.assert_allclose(p["scale_xy"], [[0.75, 0.75]] * 3)
    assert json.loads(str(p["provenance"]))["preset"] == "tiny"
    np.testing.assert_allclose(p["intrinsic"][:, 0, 2], w / 2)  # VGGT: cx = W/2
    assert geometries_from_predictions(p) == [ImageGeometry((168, 224), (126, 168), (0, 0), (126, 168))] * 3


def test_ply_is_the_confidence_filtered_cloud(run: dict[str, Any]) -> None:
    raw = (run["out"] / "points.ply").read_bytes()
    header = raw[: raw.index(b"end_header")].decode()
    assert "format binary_little_endian 1.0" in header
    for prop in ("float x", "float y", "float z", "uchar red", "uchar green", "uchar blue"):
        assert f"property {prop}" in header
    ply = read_ply(run["out"] / "points.ply")
    p = load_predictions(run["out"])
    xyz, rgb, conf, thr = select_points(
        p, geometries_from_predictions(p), points="depth", conf_threshold="50%"
    )
    assert f"element vertex {len(xyz)}" in header and len(ply["xyz"]) == run["result"]["points"] == len(xyz)
    # 50th percentile: half of the 3*126*168 = 63,504 pixels (ties aside) survive.
    assert abs(len(xyz) - 63504 / 2) <= 2
    np.testing.assert_array_equal(ply["xyz"], xyz)
    np.testing.assert_array_equal(np.stack([ply["red"], ply["green"], ply["blue"]], 1), rgb)
    assert float(ply["confidence"].min()) >= thr == pytest.approx(run["result"]["conf_threshold"])


def test_colmap_model_round_trip(run: dict[str, Any]) -> None:
    assert model_format(run["out"] / "colmap") == "bin"  # COLMAP's own default
    assert sorted(p.name for p in (run["out"] / "colmap").iterdir()) == [
        "cameras.bin",
        "images.bin",
        "points3D.bin",
    ]
    cams, imgs, pts = read_model(run["out"] / "colmap")
    p = load_predictions(run["out"])
    geoms = geometries_from_predictions(p)
    assert len(cams) == len(imgs) == 3 and len(pts) == run["result"]["points"]
    for i in range(3):
        cam, im = cams[i + 1], imgs[i + 1]
        assert cam.model == "PINHOLE" and (cam.width, cam.height) == (224, 168)  # original pixels
        K = intrinsics_to_original(p["intrinsic"][i], geoms[i])
        np.testing.assert_allclose(cam.params, [K[0, 0], K[1, 1], K[0, 2], K[1, 2]], rtol=1e-8)
        np.testing.assert_allclose(cam.params[2:], [112.0, 84.0], rtol=1e-9)  # W/2, H/2 of the original image
        np.testing.assert_allclose(qvec_to_rotmat(im.qvec), p["extrinsic"][i][:, :3], atol=1e-6)
        np.testing.assert_allclose(im.tvec, p["extrinsic"][i][:, 3], atol=1e-6)
    assert [imgs[i].name for i in (1, 2, 3)] == ["view_0.png", "view_1.PNG", "view_2.png"]
    ply = read_ply(run["out"] / "points.ply")
    xyz = np.stack([pts[k].xyz for k in sorted(pts)])
    np.testing.assert_allclose(xyz, ply["xyz"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("fmt", ["bin", "txt"])
def test_pycolmap_reads_the_export_as_predicted(
    fmt: str, run: dict[str, Any], tmp_path: Path, tiny_checkpoint: Path
) -> None:
    pycolmap = pytest.importorskip("pycolmap")
    folder = run["out"] / "colmap"
    if fmt == "txt":  # the same images, the same deterministic tiny model: only the file format differs
        out = tmp_path / "out"
        r = _invoke("infer", run["images"], "--model", tiny_checkpoint, "--out", out, "--format", "npz,colmap",
                    "--colmap-format", "txt", "--json")  # fmt: skip
        assert r.exit_code == 0, r.stderr
        assert json.loads(r.stdout)["colmap_format"] == "txt"
        assert json.loads((out / "meta.json").read_text())["colmap_format"] == "txt"
        folder = out / "colmap"
        assert sorted(p.name for p in folder.iterdir()) == ["cameras.txt", "images.txt", "points3D.txt"]
    p = load_predictions(folder.parent)
    geoms = geometries_from_predictions(p)
    rec = pycolmap.Reconstruction(str(folder))
    assert rec.num_cameras() == rec.num_images() == 3 and rec.num_points3D() == run["result"]["points"]
    tol = {"atol": 1e-12, "rtol": 0} if fmt == "bin" else {"atol": 1e-9, "rtol": 1e-9}
    for i in range(3):
        cam, im = rec.cameras[i + 1], rec.images[i + 1]
        K = intrinsics_to_original(p["intrinsic"][i].astype(np.float64), geoms[i])
        assert cam.model.name == "PINHOLE" and (cam.width, cam.height) == (224, 168)
        np.testing.assert_allclose(cam.params, [K[0, 0], K[1, 1], K[0, 2], K[1, 2]], **tol)
        np.testing.assert_allclose(
            im.cam_from_world().matrix(), p["extrinsic"][i].astype(np.float64), atol=1e-6
        )
        assert im.name == ["view_0.png", "view_1.PNG", "view_2.png"][i] and im.camera_id == i + 1
    ply = read_ply(folder.parent / "points.ply") if (folder.parent / "points.ply").exists() else None
    xyz = np.stack([rec.points3D[k].xyz for k in sorted(rec.point3D_ids())])
    ours = np.stack([pt.xyz for _, pt in sorted(read_model(folder)[2].items())])
    np.testing.assert_array_equal(xyz, ours)
    if ply is not None:
        np.testing.assert_array_equal(
            xyz, ply["xyz"].astype(np.float64)
        )  # binary: the float32 cloud, exactly


def test_txt_refuses_names_with_spaces_before_loading_the_model(tmp_path: Path) -> None:
    images = tmp_path / "my shots"
    images.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(images / "view 1.png")
    # a model path that does not exist: reaching the loader would be a different error
    r = _invoke("infer", images / "view 1.png", "--model", tmp_path / "nope.safetensors", "--colmap-format", "txt",
                "--out", tmp_path / "out")  # fmt: skip
    assert r.exit_code == 1, r.stderr
    assert (
        "Error: COLMAP's text format cannot hold image names with spaces or other whitespace: 'view 1.png'"
        in r.stderr
    )
    assert "Hint: write the binary model (--colmap-format bin, the default)" in r.stderr
    assert not (tmp_path / "out").exists()


def test_meta_json(run: dict[str, Any], tiny_checkpoint: Path) -> None:
    meta = json.loads((run["out"] / "meta.json").read_text())
    assert meta["provenance"]["sha256"] == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert meta["provenance"]["kind"] == "file" and meta["versions"]["torch"]
    assert meta["settings"]["mode"] == "crop" and meta["colmap_units"] == "original"
    assert meta["colmap_format"] == "bin" and meta["settings"]["colmap_format"] == "bin"
    assert [f["name"] for f in meta["frames"]] == ["view_0.png", "view_1.PNG", "view_2.png"]
    # --dtype auto: the choice and why it was made are recorded.
    assert meta["settings"]["dtype"] == "auto" and meta["resolved"]["dtype"] == _cpu_auto_dtype()
    reason = meta["resolved"]["dtype_reason"]
    assert reason.startswith("CPU bf16 ") and ("native" in reason) == (_cpu_auto_dtype() == "bfloat16")


def test_explicit_dtypes_on_cpu_agree_and_are_recorded(tmp_path: Path, tiny_checkpoint: Path) -> None:
    images = _images(tmp_path / "im", n=2)
    preds = {}
    for dtype, name, weights in (("fp32", "float32", "float32"), ("bf16", "bfloat16", "bfloat16")):
        out = tmp_path / dtype
        r = _invoke("infer", images, "--model", tiny_checkpoint, "--out", out, "--format", "npz",
                    "--dtype", dtype, "--json")  # fmt: skip
        assert r.exit_code == 0, r.stderr
        assert json.loads(r.stdout)["dtype"] == name
        meta = json.loads((out / "meta.json").read_text())
        assert meta["resolved"]["dtype"] == name and meta["resolved"]["dtype_reason"] == "requested"
        assert meta["resolved"]["weights_dtype"] == weights  # CPU bf16: the loader's bf16 weights
        preds[dtype] = load_predictions(out / "predictions.npz")
    for key in ("depth", "world_points", "extrinsic"):
        a, b = preds["fp32"][key], preds["bf16"][key]
        rel = float(np.abs(b - a).max() / np.abs(a).max())
        assert 0 < rel < 2e-2, (key, rel)  # bf16 really ran (not bit-equal), and stays close to fp32


def test_model_units_head_points_and_video(tmp_path: Path, tiny_checkpoint: Path) -> None:
    import cv2

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (224, 168))
    for i in range(7):
        writer.write(np.full((168, 224, 3), 30 * i, dtype=np.uint8))
    writer.release()
    out = tmp_path / "out"
    r = _invoke("infer", video, "--every", 3, "--model", tiny_checkpoint, "--out", out, "--format", "colmap",
                "--colmap-units", "model", "--points", "head", "--conf-threshold", "1.0", "--json")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    res = json.loads(r.stdout)
    assert (
        res["frames"] == 3
        and set(res["files"]) == {"colmap", "meta"}
        and not (out / "predictions.npz").exists()
    )
    cams, imgs, pts = read_model(out / "colmap")
    assert [(c.width, c.height) for c in cams.values()] == [(168, 126)] * 3
    np.testing.assert_allclose([c.params[2:] for c in cams.values()], [[84.0, 63.0]] * 3)  # model pixels
    assert [im.name for im in imgs.values()] == [f"frames/clip_{i:06d}.png" for i in (0, 3, 6)]
    for im in imgs.values():  # decoded frames are saved where images.txt says
        assert Image.open(out / im.name).size == (224, 168)
    assert len(pts) == res["points"] == 3 * 126 * 168  # confidence is always > 1: nothing filtered


def test_select_points_drops_padding_hand_case() -> None:
    # One 4x4 frame whose top row is white padding; confidences 1..16 row-major.
    g = ImageGeometry(orig_hw=(3, 4), resized_hw=(3, 4), offset_xy=(0, 1), out_hw=(4, 4))
    preds = {
        "world_points_from_depth": np.arange(48, dtype=np.float32).reshape(1, 4, 4, 3),
        "depth_conf": np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4),
        "images": np.zeros((1, 3, 4, 4), dtype=np.float32),
    }
    xyz, rgb, conf, thr = select_points(preds, [g], conf_threshold="50%")
    # Valid confidences 5..16 -> median 10.5 -> keep 11..16 (pixels 10..15).
    assert thr == 10.5 and conf.tolist() == [11, 12, 13, 14, 15, 16]
    np.testing.assert_array_equal(xyz[0], [30, 31, 32])
    xyz, _, conf, thr = select_points(preds, [g], conf_threshold="7")
    assert thr == 7.0 and conf.tolist() == list(range(7, 17))
    preds["world_points_from_depth"][0, 3, 3] = np.nan  # non-finite points are never written
    _, _, conf, _ = select_points(preds, [g], conf_threshold="0%", max_points=5)
    assert len(conf) == 5 and 16 not in conf.tolist()


def test_usage_errors_exit_2_before_loading_anything(tmp_path: Path) -> None:
    images = _images(tmp_path / "images")
    r = _invoke("infer", images, "--model", "tiny", "--chunk-size", 4, "--overlap", 4)
    assert r.exit_code == 2
    assert "Error: invalid infer settings: --chunk-size 4 (must be larger than the overlap (4)" in r.stderr
    r = _invoke("infer", images, "--format", "npz,obj")
    assert r.exit_code == 2 and "--format npz,obj" in r.stderr
    r = _invoke("infer", images, "--conf-threshold", "150%")
    assert r.exit_code == 2 and "--conf-threshold" in r.stderr
    r = _invoke("infer", images, "--mode", "stretch")
    assert r.exit_code == 2
    import torch

    if not torch.cuda.is_available():
        r = _invoke("infer", images, "--device", "cuda", "--model", "tiny")
        assert r.exit_code == 2 and "sees no CUDA GPU" in r.stderr and "Hint:" in r.stderr


def test_input_errors_exit_1(tmp_path: Path) -> None:
    r = _invoke("infer", tmp_path / "missing.jpg", "--model", "tiny")
    assert r.exit_code == 1 and f"Error: input not found: {tmp_path / 'missing.jpg'}" in r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _invoke("infer", empty, "--model", "tiny")
    assert r.exit_code == 1 and "Error: no images in" in r.stderr and r.stdout == ""
