"""`download_eth3d` end to end against a loopback server serving generated per-kind archives."""

from __future__ import annotations

import json
import shutil
import threading
from collections import namedtuple
from pathlib import Path

import py7zr
import pytest

from tests.loopback_http import Fault, LoopbackServer
from vggtctl.data.eth3d import open_scene
from vggtctl.errors import DiskSpaceError, DownloadError, UsageError
from vggtctl.services.eth3d_download import (
    DownloadConfig,
    DownloadPlan,
    DownloadReport,
    _folder_lock,
    download_eth3d,
    load_manifest,
    resolve_kinds,
    resolve_scenes,
)
from vggtctl.services.synthetic import generate_scenes

ALL_KINDS = ["undistorted", "jpg", "depth", "occlusion", "scan_eval"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small synthetic scene with its five archives and manifest.json (read-only)."""
    root = tmp_path_factory.mktemp("gen")
    generate_scenes(root, scenes=1, views=2, seed=5, width=64, height=48, archives=True)
    return root


@pytest.fixture()
def served(generated: Path, tmp_path: Path) -> Path:
    """A private copy of the archives that a test may tamper with."""
    dst = tmp_path / "served"
    shutil.copytree(generated / "archives", dst)
    return dst


def _config(srv: LoopbackServer, served: Path, out: Path, **kw: object) -> DownloadConfig:
    base = {"scenes": ["synth_000"], "kinds": ALL_KINDS, "out": out, "base_url": srv.url,
            "manifest": served / "manifest.json", "backoff": 0.01, "retries": 3, "jobs": 2}  # fmt: skip
    base.update(kw)
    return DownloadConfig(**base)  # type: ignore[arg-type]


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_download_extracts_exact_scene_and_rerun_skips(generated: Path, served: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with LoopbackServer(served) as srv:
        report = download_eth3d(_config(srv, served, out))
        assert isinstance(report, DownloadReport)
        assert [a.status for a in report.archives] == ["extracted"] * 5
        assert _tree(out / "synth_000") == _tree(generated / "synth_000")
        manifest = json.loads((served / "manifest.json").read_text())
        local = json.loads((out / ".vggtctl" / "manifest.json").read_text())["archives"]
        for a in report.archives:
            assert a.sha256 == manifest[a.name]["sha256"] == local[a.name]["sha256"]
            assert local[a.name]["extracted"] is True
        assert list((out / "archives").iterdir()) == []  # archives deleted after extraction
        n_requests = len(srv.log)
        again = download_eth3d(_config(srv, served, out))
        assert isinstance(again, DownloadReport)
        assert [a.status for a in again.archives] == ["skipped"] * 5
        assert len(srv.log) == n_requests  # a complete scene needs no network at all
    scene = open_scene(out / "synth_000")
    assert scene.has_depth() and scene.has_scans() and len(scene.frames) == 2
    assert (scene.gt_depth(scene.frames[0]) > 0).mean() > 0.3


def test_dropped_connection_resumes_byte_identical(served: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    name = "synth_000_dslr_scan_eval.7z"
    with LoopbackServer(served) as srv:
        srv.faults[name] = Fault(drop_after=20_000)
        report = download_eth3d(_config(srv, served, out, kinds=["scan_eval"], keep_archives=True))
        gets = srv.requests_for(name)
    assert [(g.range, g.status) for g in gets] == [(None, 200), ("bytes=20000-", 206)]
    assert (out / "archives" / name).read_bytes() == (served / name).read_bytes()
    assert isinstance(report, DownloadReport) and report.archives[0].status == "extracted"


def test_500_then_200_and_no_range_server(served: Path, tmp_path: Path) -> None:
    with LoopbackServer(served, range_support=False) as srv:
        srv.faults["synth_000_dslr_depth.7z"] = Fault(fail_status=500, fails=1, drop_after=5000)
        report = download_eth3d(_config(srv, served, tmp_path / "out", kinds=["depth"], keep_archives=True))
        statuses = [(g.range, g.status) for g in srv.requests_for("synth_000_dslr_depth.7z")]
    assert statuses == [(None, 500), (None, 200), ("bytes=5000-", 200)]
    name = "synth_000_dslr_depth.7z"
    assert (tmp_path / "out" / "archives" / name).read_bytes() == (served / name).read_bytes()
    assert isinstance(report, DownloadReport)


def test_wrong_size_is_fatal_and_others_finish(served: Path, tmp_path: Path) -> None:
    table = json.loads((served / "manifest.json").read_text())
    table["synth_000_dslr_jpg.7z"]["bytes"] += 1
    (served / "manifest.json").write_text(json.dumps(table))
    out = tmp_path / "out"
    with LoopbackServer(served) as srv:
        with pytest.raises(DownloadError, match="synth_000_dslr_jpg.7z: the server sends") as e:
            download_eth3d(_config(srv, served, out, kinds=["undistorted", "jpg"], jobs=1))
    real = table["synth_000_dslr_jpg.7z"]["bytes"] - 1
    assert f"sends {real} bytes, expected {real + 1}" in e.value.message
    assert (out / "synth_000" / "dslr_calibration_undistorted" / "images.txt").is_file()
    assert not (out / "synth_000" / "dslr_calibration_jpg").exists()


def test_corrupted_archive_is_deleted_and_reported(served: Path, tmp_path: Path) -> None:
    name = "synth_000_dslr_depth.7z"
    raw = bytearray((served / name).read_bytes())
    for i in range(100, 140):
        raw[i] ^= 0xFF
    (served / name).write_bytes(bytes(raw))
    table = json.loads((served / "manifest.json").read_text())
    del table[name]["sha256"]  # sizes match: only extraction can tell
    (served / "manifest.json").write_text(json.dumps(table))
    out = tmp_path / "out"
    with LoopbackServer(served) as srv:
        with pytest.raises(DownloadError, match=f"{name}: .*deleted the archive, nothing was extracted") as e:
            download_eth3d(_config(srv, served, out, kinds=["depth"], keep_archives=True))
    assert "re-run" in (e.value.hint or "")
    assert not (out / "archives" / name).exists() and not (out / "archives" / (name + ".part")).exists()
    assert not (out / "synth_000").exists()
    local = json.loads((out / ".vggtctl" / "manifest.json").read_text())["archives"]
    assert name not in local or not local[name]
    assert [p.name for p in out.iterdir() if p.name.startswith(".extract")] == []


@pytest.mark.parametrize("member", ["../evil", "/tmp/vggtctl_download_abs_evil"])
def test_archive_escaping_the_target_writes_nothing_outside(
    served: Path, tmp_path: Path, member: str
) -> None:
    name = "synth_000_dslr_occlusion.7z"
    with py7zr.SevenZipFile(served / name, "w") as z:
        z._writestr(b"mask", "synth_000/masks_for_images/dslr_images/DSC_0000.png")
        z._writestr(b"pwned", member)
    table = json.loads((served / "manifest.json").read_text())
    table[name] = {"bytes": (served / name).stat().st_size}
    (served / "manifest.json").write_text(json.dumps(table))
    out = tmp_path / "data" / "out"
    with LoopbackServer(served) as srv:
        with pytest.raises(DownloadError, match="nothing was extracted"):
            download_eth3d(_config(srv, served, out, kinds=["occlusion"]))
    assert not (tmp_path / "data" / "evil").exists() and not (out / "evil").exists()
    assert not Path("/tmp/vggtctl_download_abs_evil").exists()
    assert not (out / "synth_000").exists()


def test_not_enough_disk_refuses_before_fetching(served: Path, tmp_path: Path) -> None:
    Usage = namedtuple("Usage", "total used free")
    with LoopbackServer(served) as srv:
        cfg = _config(srv, served, tmp_path / "out", kinds=["depth"])
        with pytest.raises(DiskSpaceError, match=r"not enough free space in .*out: need .* free") as e:
            download_eth3d(cfg, disk_usage=lambda p: Usage(10**9, 10**9 - 1000, 1000))
        assert srv.log == []
    size = json.loads((served / "manifest.json").read_text())["synth_000_dslr_depth.7z"]["bytes"]
    assert f"({size + int(3.5 * size)} bytes: " in e.value.message and "(1000 bytes)" in e.value.message
    plan = download_eth3d(DownloadConfig(**{**cfg.__dict__, "dry_run": True}))
    assert isinstance(plan, DownloadPlan) and plan.disk_needed == size + int(3.5 * size)


def test_recorded_sha256_is_checked_on_later_runs(served: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    name = "synth_000_dslr_depth.7z"
    table = json.loads((served / "manifest.json").read_text())
    original_sha = table[name].pop("sha256")  # nothing pinned: the first download records it
    (served / "manifest.json").write_text(json.dumps(table))
    with LoopbackServer(served) as srv:
        download_eth3d(_config(srv, served, out, kinds=["depth"]))
        local = json.loads((out / ".vggtctl" / "manifest.json").read_text())["archives"][name]
        assert local["sha256"] == original_sha
        shutil.rmtree(out / "synth_000")  # the scene is gone: next run downloads again
        data = bytearray((served / name).read_bytes())
        data[-1] ^= 1  # same size, different content: a silently changed mirror
        (served / name).write_bytes(bytes(data))
        with pytest.raises(DownloadError, match=f"does not match the expected {original_sha}"):
            download_eth3d(_config(srv, served, out, kinds=["depth"]))
        # --no-verify accepts the changed file (and then fails to extract it only if it is damaged)
        with pytest.raises(DownloadError, match="nothing was extracted"):
            download_eth3d(_config(srv, served, out, kinds=["depth"], verify=False))


def test_cancel_leaves_part_and_next_run_resumes(served: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    name = "synth_000_dslr_scan_eval.7z"
    cancel = threading.Event()
    with LoopbackServer(served) as srv:
        srv.faults[name] = Fault(throttle_bps=400_000, on_sent=cancel.set, on_sent_after=64 * 1024)
        with pytest.raises(KeyboardInterrupt):
            download_eth3d(_config(srv, served, out, kinds=["scan_eval"], keep_archives=True), cancel=cancel)
        part = out / "archives" / (name + ".part")
        assert 0 < part.stat().st_size < (served / name).stat().st_size
        plan = download_eth3d(_config(srv, served, out, kinds=["scan_eval"], dry_run=True))
        assert isinstance(plan, DownloadPlan) and plan.archives[0].state == "partial"
        assert plan.fetch_bytes == (served / name).stat().st_size - part.stat().st_size
        srv.faults.clear()
        download_eth3d(_config(srv, served, out, kinds=["scan_eval"], keep_archives=True))
        assert srv.requests_for(name)[-1].range == f"bytes={plan.archives[0].have_bytes}-"
    assert (out / "archives" / name).read_bytes() == (served / name).read_bytes()


def test_unknown_size_is_fetched_with_head(served: Path, tmp_path: Path) -> None:
    table = json.loads((served / "manifest.json").read_text())
    del table["synth_000_dslr_depth.7z"]
    (served / "manifest.json").write_text(json.dumps(table))
    with LoopbackServer(served) as srv:
        plan = download_eth3d(_config(srv, served, tmp_path / "out", kinds=["depth", "jpg"], dry_run=True))
        assert isinstance(plan, DownloadPlan)
        assert [(a.name, a.size_source) for a in plan.archives] == [
            ("synth_000_dslr_depth.7z", "head"), ("synth_000_dslr_jpg.7z", "manifest")]  # fmt: skip
        assert plan.archives[0].bytes == (served / "synth_000_dslr_depth.7z").stat().st_size
        assert [r.method for r in srv.log] == ["HEAD"]


def test_one_downloader_per_folder(served: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with LoopbackServer(served) as srv, _folder_lock(out):
        with pytest.raises(UsageError, match="another vggtctl download is writing to"):
            download_eth3d(_config(srv, served, out, kinds=["depth"]))


def test_scene_kind_and_manifest_parsing(tmp_path: Path) -> None:
    assert resolve_scenes(None, "facades") == ["facade", "electro", "courtyard", "terrace"]
    assert resolve_scenes("facade, electro,facade", None) == ["facade", "electro"]
    assert len(resolve_scenes(None, None)) == 13
    with pytest.raises(UsageError, match="unknown ETH3D training scene 'synth_000'"):
        resolve_scenes("synth_000", None)
    assert resolve_scenes("synth_000", None, free_names=True) == ["synth_000"]
    with pytest.raises(UsageError, match="scenes and subset: give one, not both"):
        resolve_scenes("facade", "indoor")
    with pytest.raises(UsageError, match="unknown subset 'garden'"):
        resolve_scenes(None, "garden")
    assert resolve_kinds(None) == ["undistorted", "jpg", "depth", "scan_eval"]
    with pytest.raises(UsageError, match="unknown kind"):
        resolve_kinds("depth,raw")
    bad = tmp_path / "m.json"
    bad.write_text('{"a.7z": {"bytes": 1},\n "b.7z": }')
    with pytest.raises(UsageError, match=r"m\.json:2: invalid JSON"):
        load_manifest(bad)
    bad.write_text('{"a.7z": {"bytes": 1, "sha256": "abc"}}')
    with pytest.raises(UsageError, match="not 64 hex digits"):
        load_manifest(bad)
