"""A rendezvous port the launcher chose is held until the end and moved when lost; a port given is never moved.

The failure this guards against (seen before the hold existed): two deepspeed-runner launches started
together both planned 29500; the second one's rank 0 failed with EADDRINUSE, its rank 1 joined the first
launch's store, and both launches failed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from pathlib import Path

import pytest

from tests.procs import ROOT
from vggtctl.errors import LaunchError
from vggtctl.launch import LaunchRequest, Worker, run_plan
from vggtctl.launch.detect import free_port, port_in_use
from vggtctl.launch.plan import DEFAULT_PORT, Detected, LaunchPlan, build_plan
from vggtctl.launch.port_hold import HOLDS, hold, names_lost_port

WORKER = "tests.scripts.launch_worker"
# What rank 0 printed when the port was taken (torch 2.x, TCPStore of the env:// rendezvous).
TORCH_BIND_ERROR = (
    "torch.distributed.DistNetworkError: The server socket has failed to listen on any local network "
    "address. port: 42169, useIpv6: false, code: -98, name: EADDRINUSE, message: address already in use"
)
linux_only = pytest.mark.skipif(not HOLDS, reason="ports are held on Linux only")


@pytest.fixture(autouse=True)
def _pythonpath(monkeypatch: pytest.MonkeyPatch) -> None:
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{path}" if path else str(ROOT))


def _take(port: int) -> socket.socket:
    """Bind and listen on ``port`` the way another job's TCPStore does (``SO_REUSEADDR``)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", port))
    s.listen()
    return s


@pytest.mark.parametrize(
    ("line", "port", "lost"),
    [
        (TORCH_BIND_ERROR, 42169, True),
        (TORCH_BIND_ERROR, 4216, False),  # another port's error is not ours
        (
            "The server socket has failed to bind to [::]:29500 (errno: 98 - Address already in use).",
            29500,
            True,
        ),
        ("OSError: [Errno 98] Address already in use", 29500, False),  # names no port: not the rendezvous
        ("hello from rank 0 of 2 on port 42169", 42169, False),
    ],
)
def test_names_lost_port(line: str, port: int, lost: bool) -> None:
    assert names_lost_port(line, port) is lost


@linux_only
def test_a_held_port_is_busy_to_other_launches_but_rank_0s_store_binds_it() -> None:
    torch_dist = pytest.importorskip("torch.distributed")
    held = hold()
    assert held is not None
    try:
        assert port_in_use(held.port)  # another launch's probe
        assert hold(held.port) is None  # another launch's hold
        store = torch_dist.TCPStore("127.0.0.1", held.port, 1, True, wait_for_workers=False)
        store.set("k", "v")
        assert store.get("k") == b"v"
        del store
    finally:
        held.release()
    assert not port_in_use(held.port)


def _own_socket_on(port: int) -> bool:
    """Whether a socket open in this process is bound to ``port`` (each fd read through a duplicate)."""
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            with socket.socket(fileno=os.dup(int(fd))) as s:
                if s.family in (socket.AF_INET, socket.AF_INET6) and s.getsockname()[1] == port:
                    return True
    return False


@pytest.mark.slow
@linux_only
def test_deepspeed_port_taken_after_the_hold_is_launched_again_on_a_free_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The race made certain: between the hold and rank 0's bind, another job's store takes the port (through
    # SO_REUSEADDR, which the hold cannot refuse). Two deepspeed starts, ~20 s on 2 cores.
    pytest.importorskip("deepspeed")
    plan = build_plan(
        LaunchRequest(launcher="deepspeed", nproc_per_node=2),
        Detected(cpus=2, deepspeed=True, busy_ports=frozenset({DEFAULT_PORT}), spare_port=free_port()),
        {},
    )
    assert plan.port_movable
    starts: list[int] = []
    out = tmp_path / "sum.json"
    with contextlib.ExitStack() as stack:

        def before_start(p: LaunchPlan) -> None:
            assert p.master_port is not None
            # held: no other launch can plan this port now
            assert port_in_use(p.master_port) and hold(p.master_port) is None
            starts.append(p.master_port)
            if len(starts) == 1:
                stack.enter_context(_take(p.master_port))

        with caplog.at_level(logging.WARNING, logger="vggtctl.launch.runner"):
            code = run_plan(
                plan, Worker(WORKER, ["allreduce", str(out)]), tmp_path / "logs", before_start=before_start
            )
    assert code == 0
    assert len(starts) == 2 and starts[0] == plan.master_port != starts[1]
    assert json.loads(out.read_text())["MASTER_PORT"] == str(starts[1])
    first = (tmp_path / "logs" / "rank0.log").read_text()
    assert "EADDRINUSE" in first and f"port: {starts[0]}" in first  # the first start's, same log
    assert (
        f"port {starts[0]} was taken before rank 0 could bind it (EADDRINUSE); launching again on free port "
        f"{starts[1]} (start 2 of 3)"
    ) in caplog.text
    # released after the run: no socket of this process is bound to it (a plain re-bind can still fail for a
    # minute after the run, while the store's closed connections sit in TIME_WAIT on that port)
    assert not _own_socket_on(starts[1])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("nnodes", "says"),
    [(1, "a port you give is never changed"), (2, "every node dials this port, so it cannot be moved")],
)
def test_a_port_given_and_taken_is_an_error_and_never_moved(tmp_path: Path, nnodes: int, says: str) -> None:
    # torchrun's agent binds a given port itself and fails at once (~5 s): no worker starts.
    with _take(0) as taken:
        port = taken.getsockname()[1]
        request = LaunchRequest(nproc_per_node=1 if nnodes > 1 else 2, nnodes=nnodes, master_port=port)
        if nnodes > 1:
            request = LaunchRequest(nproc_per_node=1, nnodes=2, master_addr="127.0.0.1", master_port=port)
        plan = build_plan(request, Detected(cpus=2), {})
        assert (plan.backend, plan.master_port, plan.port_movable) == ("torchrun", port, False)
        starts: list[int | None] = []
        with pytest.raises(LaunchError) as e:
            run_plan(plan, Worker(WORKER, ["allreduce", str(tmp_path / "sum.json")]), tmp_path / "logs",
                     before_start=lambda p: starts.append(p.master_port))  # fmt: skip
    assert starts == [port]
    assert f"master_port {port}" in e.value.message and "EADDRINUSE" in e.value.message
    assert says in f"{e.value.message} {e.value.hint}" and "--master-port P" in (e.value.hint or "")
