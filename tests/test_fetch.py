"""HTTP transfer against an in-process loopback server: resume, restarts, retries, verification."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.loopback_http import Fault, LoopbackServer
from vggtctl.errors import DiskSpaceError, DownloadError, HostUnreachableError
from vggtctl.services.fetch import Cancelled, RetryPolicy, fetch, head_size, part_path

SIZE = 3_000_000
FAST = RetryPolicy(retries=3, backoff=0.01, timeout=(5.0, 10.0))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    root = tmp_path_factory.mktemp("served")
    data = np.random.default_rng(7).bytes(SIZE)
    (root / "a.bin").write_bytes(data)
    return root, data


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_plain_download_verifies_size_and_sha(served: tuple[Path, bytes], tmp_path: Path) -> None:
    root, data = served
    with LoopbackServer(root) as srv:
        assert head_size(srv.url + "a.bin") == SIZE
        seen: list[int] = []
        res = fetch(srv.url + "a.bin", tmp_path / "a.bin", expected_bytes=SIZE, expected_sha256=_sha(data),
                    policy=FAST, on_bytes=seen.append)  # fmt: skip
    assert (tmp_path / "a.bin").read_bytes() == data
    assert res.sha256 == _sha(data) and res.bytes == SIZE and res.attempts == 1 and not res.cached
    assert sum(seen) == SIZE and not part_path(tmp_path / "a.bin").exists()


def test_dropped_connection_resumes_with_range(served: tuple[Path, bytes], tmp_path: Path) -> None:
    root, data = served
    with LoopbackServer(root) as srv:
        srv.faults["a.bin"] = Fault(drop_after=1_234_567)
        res = fetch(
            srv.url + "a.bin",
            tmp_path / "a.bin",
            expected_bytes=SIZE,
            expected_sha256=_sha(data),
            policy=FAST,
        )
        gets = srv.requests_for("a.bin")
    assert (tmp_path / "a.bin").read_bytes() == data
    assert [(g.range, g.status) for g in gets] == [(None, 200), ("bytes=1234567-", 206)]
    assert res.attempts == 2 and res.restarts == 0 and res.sha256 == _sha(data)


def test_server_without_range_restarts_cleanly(served: tuple[Path, bytes], tmp_path: Path) -> None:
    root, data = served
    with LoopbackServer(root, range_support=False) as srv:
        srv.faults["a.bin"] = Fault(drop_after=1_000_000)
        seen: list[int] = []
        res = fetch(
            srv.url + "a.bin", tmp_path / "a.bin", expected_bytes=SIZE, policy=FAST, on_bytes=seen.append
        )
        gets = srv.requests_for("a.bin")
    assert (tmp_path / "a.bin").read_bytes() == data
    # the resume request got a 200: the partial file was discarded, not appended to
    assert [(g.range, g.status) for g in gets] == [(None, 200), ("bytes=1000000-", 200)]
    assert res.restarts == 1 and sum(seen) == SIZE and res.sha256 == _sha(data)


def test_500_then_200_is_retried(served: tuple[Path, bytes], tmp_path: Path) -> None:
    root, data = served
    with LoopbackServer(root) as srv:
        srv.faults["a.bin"] = Fault(fail_status=500, fails=2)
        res = fetch(srv.url + "a.bin", tmp_path / "a.bin", expected_bytes=SIZE, policy=FAST)
        statuses = [g.status for g in srv.requests_for("a.bin")]
    assert statuses == [500, 500, 200] and res.attempts == 3
    assert (tmp_path / "a.bin").read_bytes() == data


def test_retries_are_bounded(served: tuple[Path, bytes], tmp_path: Path) -> None:
    root, _ = served
    with LoopbackServer(root) as srv:
        srv.faults["a.bin"] = Fault(fail_status=503, fails=100)
        with pytest.raises(
            DownloadError, match=r"giving up after 4 attempts \(0 of 3000000 bytes\): HTTP 503"
        ) as e:
            fetch(srv.url + "a.bin", tmp_path / "a.bin", expected_bytes=SIZE, policy=FAST)
        assert len(srv.requests_for("a.bin")) == 4
    assert "re-run the same command" in (e.value.hint or "")


def test_content_range_must_start_where_the_file_ends(served: tuple[Path, bytes], tmp_path: Path) -> None:
    root, data = served
    part_path(tmp_path / "a.bin").write_bytes(data[:1000])
    with LoopbackServer(root) as srv:
        srv.faults["a.bin"] = Fault(bad_range_offset=10, bad_ranges=1)
        res = fetch(srv.url + "a.bin", tmp_path / "a.bin", expected_bytes=SIZE, policy=FAST)
        gets = srv.requests_for("a.bin")
    assert (tmp_path / "a.bin").read_bytes() == data
    assert [(g.range, g.status) for g in gets] == [("bytes=1000-", 206), (None, 200)]
    assert res.resumed_from == 1000 and res.restarts == 1


def test_416_on_a_complete_part_finishes_without_body(served: tuple[Path, bytes], tmp_path: Path) -> None:
    root, data = served
    part_path(tmp_path / "a.bin").write_bytes(data)
    with LoopbackServer(root) as srv:
        res = fetch(srv.url + "a.bin", tmp_path / "a.bin", policy=FAST)
        gets = srv.requests_for("a.bin")
    assert [(g.range, g.status) for g in gets] == [(f"bytes={SIZE}-", 416)]
    assert (tmp_path / "a.bin").read_bytes() == data and res.sha256 == _sha(data)


def test_416_with_a_stale_part_restarts(served: tuple[Path, bytes], tmp_path: Path) -> None:
    root, data = served
    part_path(tmp_path / "a.bin").write_bytes(data + b"junk")
    with LoopbackServer(root) as srv:
        fetch(srv.url + "a.bin", tmp_path / "a.bin", policy=FAST)
        gets = srv.requests_for("a.bin")
    assert [(g.range, g.status) for g in gets] == [(f"bytes={SIZE + 4}-", 416), (None, 200)]
    assert (tmp_path / "a.bin").read_bytes() == data


def test_wrong_size_is_fatal(served: tuple[Path, bytes], tmp_path: Path) -> None:
    root, _ = served
    with LoopbackServer(root) as srv:
        with pytest.raises(DownloadError, match=f"the server sends {SIZE} bytes, expected {SIZE + 5}"):
            fetch(srv.url + "a.bin", tmp_path / "a.bin", expected_bytes=SIZE + 5, policy=FAST)
        assert len(srv.requests_for("a.bin")) == 1
    assert not (tmp_path / "a.bin").exists()


def test_sha_mismatch_deletes_the_download(served: tuple[Path, bytes], tmp_path: Path) -> None:
    root, data = served
    with LoopbackServer(root) as srv:
        with pytest.raises(
            DownloadError, match=f"sha256 {_sha(data)} does not match the expected {'0' * 64}"
        ):
            fetch(srv.url + "a.bin", tmp_path / "a.bin", expected_sha256="0" * 64, policy=FAST)
    assert not (tmp_path / "a.bin").exists() and not part_path(tmp_path / "a.bin").exists()


def test_404_is_not_retried(served: tuple[Path, bytes], tmp_path: Path) -> None:
    root, _ = served
    with LoopbackServer(root) as srv:
        with pytest.raises(DownloadError, match="answered HTTP 404") as e:
            fetch(srv.url + "missing.bin", tmp_path / "m.bin", policy=FAST)
        assert len(srv.requests_for("missing.bin")) == 1
    assert "does not exist on this server" in (e.value.hint or "")


def test_cancel_keeps_a_resumable_part(served: tuple[Path, bytes], tmp_path: Path) -> None:
    root, data = served
    cancel = threading.Event()
    with LoopbackServer(root) as srv:
        srv.faults["a.bin"] = Fault(throttle_bps=4_000_000, on_sent=cancel.set, on_sent_after=512 * 1024)
        with pytest.raises(Cancelled):
            fetch(srv.url + "a.bin", tmp_path / "a.bin", expected_bytes=SIZE, policy=FAST, cancel=cancel)
        part = part_path(tmp_path / "a.bin").read_bytes()
        assert 0 < len(part) < SIZE and data.startswith(part)
        srv.faults.clear()
        res = fetch(
            srv.url + "a.bin",
            tmp_path / "a.bin",
            expected_bytes=SIZE,
            expected_sha256=_sha(data),
            policy=FAST,
        )
        assert srv.requests_for("a.bin")[-1].range == f"bytes={len(part)}-"
    assert res.resumed_from == len(part) and (tmp_path / "a.bin").read_bytes() == data


def test_existing_final_file_is_reused_or_replaced(served: tuple[Path, bytes], tmp_path: Path) -> None:
    root, data = served
    (tmp_path / "a.bin").write_bytes(data)
    with LoopbackServer(root) as srv:
        res = fetch(srv.url + "a.bin", tmp_path / "a.bin", expected_bytes=SIZE, policy=FAST)
        assert res.cached and srv.log == []
        (tmp_path / "a.bin").write_bytes(data[:10])  # wrong size: never trusted
        res = fetch(srv.url + "a.bin", tmp_path / "a.bin", expected_bytes=SIZE, policy=FAST)
    assert not res.cached and (tmp_path / "a.bin").read_bytes() == data


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_disk_full_while_writing_is_reported(served: tuple[Path, bytes], tmp_path: Path) -> None:
    root, _ = served
    os.symlink("/dev/full", part_path(tmp_path / "a.bin"))  # every write fails with ENOSPC
    with LoopbackServer(root) as srv:
        with pytest.raises(DiskSpaceError, match="the disk is full while writing") as e:
            fetch(srv.url + "a.bin", tmp_path / "a.bin", expected_bytes=SIZE, policy=FAST)
    assert "resumes from the .part file" in (e.value.hint or "")


# --- hosts that cannot be reached: fail at once, with one short line -------------------------------------
# (fixtures offline_dns, closed_port, no_proxy_env: tests/netguard.py, registered in conftest.py)
SLOW = RetryPolicy(
    retries=8, backoff=1.0, timeout=(5.0, 10.0)
)  # the defaults' patience: a retry costs seconds


def test_unresolvable_host_fails_in_seconds(offline_dns: list[str], tmp_path: Path) -> None:
    t0 = time.perf_counter()
    with pytest.raises(HostUnreachableError) as e:
        fetch("https://archive.invalid/facade_dslr_jpg.7z", tmp_path / "a.7z", policy=SLOW)
    assert time.perf_counter() - t0 < 2.0  # 8 retries with backoff would take > 4 minutes
    assert str(e.value) == "cannot resolve the host name of archive.invalid: no network, no DNS, or a typo"
    assert "HTTPS_PROXY" in (e.value.hint or "") and len(e.value.hint or "") < 200
    assert offline_dns == ["archive.invalid"]  # one lookup, no retries
    assert not (tmp_path / "a.7z").exists()
    with pytest.raises(HostUnreachableError, match="cannot resolve the host name of archive.invalid"):
        head_size("https://archive.invalid/facade_dslr_jpg.7z")


def test_refused_connection_fails_in_seconds(no_proxy_env: None, closed_port: int, tmp_path: Path) -> None:
    t0 = time.perf_counter()
    with pytest.raises(HostUnreachableError) as e:
        fetch(f"http://127.0.0.1:{closed_port}/a.bin", tmp_path / "a.bin", policy=SLOW)
    assert time.perf_counter() - t0 < 2.0
    assert str(e.value) == (
        f"127.0.0.1:{closed_port} refused the connection on port {closed_port}: nothing listens there, "
        "or a firewall says no"
    )
    with pytest.raises(HostUnreachableError, match="refused the connection"):
        head_size(f"http://127.0.0.1:{closed_port}/a.bin")


def test_a_refusing_proxy_is_named(
    offline_dns: list[str], closed_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{closed_port}")
    with pytest.raises(HostUnreachableError) as e:
        fetch("https://www.eth3d.net/data/facade_dslr_jpg.7z", tmp_path / "a.7z", policy=SLOW)
    assert str(e.value).startswith(
        f"the proxy 127.0.0.1:{closed_port} (for www.eth3d.net) refused the connection"
    )
    assert offline_dns == ["127.0.0.1"]  # the target's name is the proxy's business


def test_reset_mid_transfer_is_still_retried_and_resumes(served: tuple[Path, bytes], tmp_path: Path) -> None:
    root, data = served
    with LoopbackServer(root) as srv:
        srv.faults["a.bin"] = Fault(drop_after=1_234_567, reset=True)
        res = fetch(srv.url + "a.bin", tmp_path / "a.bin", expected_bytes=SIZE, expected_sha256=_sha(data),
                    policy=FAST)  # fmt: skip
        gets = srv.requests_for("a.bin")
    assert (tmp_path / "a.bin").read_bytes() == data and res.attempts == 2
    assert [(g.range, g.status) for g in gets] == [(None, 200), ("bytes=1234567-", 206)]


def test_refused_after_the_server_answered_is_an_outage_worth_retrying(
    served: tuple[Path, bytes], tmp_path: Path
) -> None:
    """Once the host has answered, a refused reconnect (a server restarting) is retried, not fatal."""
    root, _ = served
    with LoopbackServer(root) as srv:
        stop_listening = lambda: srv._httpd.socket.shutdown(socket.SHUT_RDWR)  # noqa: E731 - new connects: refused
        srv.faults["a.bin"] = Fault(drop_after=1_000_000, on_sent=stop_listening, on_sent_after=1)
        with pytest.raises(DownloadError) as e:
            fetch(srv.url + "a.bin", tmp_path / "a.bin", expected_bytes=SIZE,
                  policy=RetryPolicy(retries=2, backoff=0.01, timeout=(5.0, 10.0)))  # fmt: skip
    assert not isinstance(e.value, HostUnreachableError)
    assert str(e.value).startswith("a.bin: giving up after 3 attempts (1000000 of 3000000 bytes)")
    assert str(e.value).endswith("bytes): connection refused")  # a few words, not a kilobyte repr
