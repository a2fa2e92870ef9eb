"""`vggtctl download eth3d` through the CLI: exit codes, --json, errors, resume after Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.loopback_http import Fault, LoopbackServer
from vggtctl.cli.app import app
from vggtctl.services.synthetic import generate_scenes

runner = CliRunner()
DEAD = "http://127.0.0.1:9/"  # nothing listens: any request would fail loudly


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli_gen")
    generate_scenes(root, scenes=1, views=2, seed=9, width=64, height=48, archives=True)
    return root / "archives"


def test_dry_run_json_with_the_pinned_table(tmp_path: Path) -> None:
    r = runner.invoke(app, ["download", "eth3d", "--scenes", "facade,courtyard", "--kinds", "undistorted,jpg,depth",
                            "--out", str(tmp_path / "d"), "--base-url", DEAD, "--dry-run", "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["dry_run"] is True and doc["out"] == str(tmp_path / "d")
    sizes = {a["name"]: a["bytes"] for a in doc["archives"]}
    assert sizes == {
        "facade_dslr_undistorted.7z": 1252088400, "facade_dslr_jpg.7z": 1161258255,
        "facade_dslr_depth.7z": 804421080, "courtyard_dslr_undistorted.7z": 500990569,
        "courtyard_dslr_jpg.7z": 425492376, "courtyard_dslr_depth.7z": 428289105,
    }  # fmt: skip
    assert {a["size_source"] for a in doc["archives"]} == {"pinned"}
    assert {a["state"] for a in doc["archives"]} == {"missing"}
    total = sum(sizes.values())
    assert doc["total_bytes"] == doc["fetch_bytes"] == total
    assert doc["disk_needed"] == sum(s + int(3.5 * s) for s in sizes.values())
    assert doc["archives"][0]["url"] == DEAD + "facade_dslr_undistorted.7z"
    assert not (tmp_path / "d").exists()  # a dry run writes nothing


def test_dry_run_human_output(tmp_path: Path) -> None:
    r = runner.invoke(app, ["download", "eth3d", "--subset", "facades", "--kinds", "depth", "--out",
                            str(tmp_path), "--base-url", DEAD, "--dry-run"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "terrace_dslr_depth.7z" in r.stdout and "376.7 MB" in r.stdout and "to fetch 2.3 GB" in r.stdout


def test_download_json_then_skip(archives: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with LoopbackServer(archives) as srv:
        args = ["download", "eth3d", "--scenes", "synth_000", "--kinds", "undistorted,jpg,depth", "--out", str(out),
                "--base-url", srv.url, "--manifest", str(archives / "manifest.json"), "--json"]  # fmt: skip
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        assert [a["status"] for a in doc["archives"]] == ["extracted"] * 3 and doc["out"] == str(out)
        assert doc["downloaded_bytes"] == sum(a["bytes"] for a in doc["archives"])
        r2 = runner.invoke(app, args[:-1])  # human output
        assert r2.exit_code == 0, r2.output
        assert r2.stdout.count("skipped") == 3 and f"ETH3D data in: {out}" in r2.stdout.replace("\n", "")
    assert (out / "synth_000" / "ground_truth_depth" / "dslr_images" / "DSC_0001.JPG").is_file()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--scenes", "nope"], 2, "Error: unknown ETH3D training scene 'nope'"),
        (["--kinds", "depth,raw"], 2, "Error: unknown kind(s) raw"),
        (
            ["--scenes", "facade", "--subset", "indoor"],
            2,
            "Error: invalid download settings: --scenes and --subset: give one, not both",
        ),
        (["--jobs", "0"], 2, "--jobs"),
        (["--synthetic", "--scenes", "two"], 2, "Error: with --synthetic, --scenes is a count, got 'two'"),
    ],
)
def test_usage_errors(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    r = runner.invoke(
        app, ["download", "eth3d", "--out", str(tmp_path), "--base-url", DEAD, "--dry-run", *args]
    )
    assert r.exit_code == code
    assert message in r.output
    if message.startswith("Error:"):
        assert "Hint: " in r.output


def test_runtime_failure_exits_1_with_hint(archives: Path, tmp_path: Path) -> None:
    table = json.loads((archives / "manifest.json").read_text())
    table["synth_000_dslr_depth.7z"]["bytes"] += 3
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(table))
    with LoopbackServer(archives) as srv:
        r = runner.invoke(app, ["download", "eth3d", "--scenes", "synth_000", "--kinds", "depth", "--out",
                                str(tmp_path / "o"), "--base-url", srv.url, "--manifest", str(manifest)])  # fmt: skip
    assert r.exit_code == 1
    assert "Error: synth_000_dslr_depth.7z: the server sends" in r.output and "Hint: " in r.output


def test_ctrl_c_exits_130_and_rerun_resumes(archives: Path, tmp_path: Path) -> None:
    served = tmp_path / "served"
    shutil.copytree(archives, served)
    name = "synth_000_dslr_scan_eval.7z"  # the largest archive
    out = tmp_path / "out"
    part = out / "archives" / (name + ".part")
    main = threading.main_thread().ident
    assert main is not None
    inside = threading.Event()

    def on_sigint(signum: int, frame: object) -> None:
        if inside.is_set():  # only while the command runs: never interrupt pytest itself
            raise KeyboardInterrupt

    def press_ctrl_c_once_data_arrived() -> None:
        for _ in range(1000):
            if part.exists() and part.stat().st_size > 0:
                signal.pthread_kill(main, signal.SIGINT)  # a real SIGINT in the main thread
                return
            threading.Event().wait(0.01)

    args = ["download", "eth3d", "--scenes", "synth_000", "--kinds", "scan_eval", "--out", str(out), "--jobs", "1",
            "--base-url", "", "--manifest", str(served / "manifest.json"), "--keep-archives"]  # fmt: skip
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        with LoopbackServer(served) as srv:
            args[args.index("--base-url") + 1] = srv.url
            srv.faults[name] = Fault(throttle_bps=100_000)  # ~2 s for the whole archive
            watcher = threading.Thread(target=press_ctrl_c_once_data_arrived, daemon=True)
            watcher.start()
            inside.set()
            r = runner.invoke(app, args)
            inside.clear()
            watcher.join()
            assert r.exit_code == 130, r.output
            assert "Error: interrupted" in r.output and "Hint: re-run the same command to resume" in r.output
            have = part.stat().st_size
            assert 0 < have < (served / name).stat().st_size
            srv.faults.clear()
            r2 = runner.invoke(app, args)
            assert r2.exit_code == 0, r2.output
            assert srv.requests_for(name)[-1].range == f"bytes={have}-"
    finally:
        inside.clear()
        signal.signal(signal.SIGINT, previous)
    assert (out / "archives" / name).read_bytes() == (served / name).read_bytes()


def test_synthetic_via_cli(tmp_path: Path) -> None:
    r = runner.invoke(app, ["download", "eth3d", "--synthetic", "--out", str(tmp_path / "syn"), "--scenes", "1",
                            "--views", "2", "--seed", "3", "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc == {
        "synthetic": True,
        "out": str(tmp_path / "syn"),
        "scenes": ["synth_000"],
        "views": 2,
        "seed": 3,
    }
    assert sorted(os.listdir(tmp_path / "syn" / "synth_000" / "images" / "dslr_images_undistorted")) == [
        "DSC_0000.JPG", "DSC_0001.JPG"]  # fmt: skip


def test_help_lists_eth3d_and_weights() -> None:
    r = runner.invoke(app, ["download", "--help"])
    assert r.exit_code == 0 and "eth3d" in r.stdout and "weights" in r.stdout
    r = runner.invoke(app, ["download", "eth3d", "--help"])
    assert r.exit_code == 0 and "vggtctl download eth3d --subset facades" in r.stdout


@pytest.mark.parametrize("jobs", ["1", "4"])
def test_offline_fails_in_seconds_with_one_short_error(
    offline_dns: list[str], tmp_path: Path, jobs: str
) -> None:
    # the real default server (www.eth3d.net), a machine without network; small sizes so the disk check passes
    names = [f"facade_dslr_{k}.7z" for k in ("undistorted", "jpg", "depth", "scan_eval")]
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({n: {"bytes": 1000} for n in names}))
    t0 = time.perf_counter()
    r = runner.invoke(app, ["download", "eth3d", "--scenes", "facade", "--out", str(tmp_path / "o"),
                            "--manifest", str(manifest), "--jobs", jobs])  # fmt: skip
    assert time.perf_counter() - t0 < 5.0  # was 4 minutes: 9 attempts per archive with backoff
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert lines[0] == "Error: cannot resolve the host name of www.eth3d.net: no network, no DNS, or a typo"
    assert len(lines) == 2 and lines[1].startswith("Hint: check the network") and len(r.stderr) < 500
    assert "HTTPS_PROXY" in lines[1] and "vggtctl download eth3d --synthetic" in lines[1]
    assert set(offline_dns) == {"www.eth3d.net"} and len(offline_dns) <= int(jobs)  # no retries


def test_offline_dry_run_that_needs_sizes_fails_the_same_way(offline_dns: list[str], tmp_path: Path) -> None:
    manifest = tmp_path / "m.json"  # one size known: the other archive's size needs a HEAD request
    manifest.write_text(json.dumps({"facade_dslr_jpg.7z": {"bytes": 1000}}))
    r = runner.invoke(app, ["download", "eth3d", "--scenes", "facade", "--kinds", "jpg,depth", "--out",
                            str(tmp_path / "o"), "--manifest", str(manifest), "--dry-run"])  # fmt: skip
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert lines[0] == "Error: cannot resolve the host name of www.eth3d.net: no network, no DNS, or a typo"
    assert len(lines) == 2 and "--synthetic" in lines[1] and offline_dns == ["www.eth3d.net"]
