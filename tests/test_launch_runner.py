"""The runner: a real 2-process torchrun on gloo, per-rank logs, exit codes passed through, signals forwarded.

Also: one-node launches that leave the port to torchrun never race for it (two at once, 29500 held).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.procs import ROOT
from vggtctl.launch import LaunchRequest, Worker, plan_for, run_plan
from vggtctl.launch.plan import DEFAULT_PORT, Detected, build_plan
from vggtctl.launch.runner import exit_code

WORKER = "tests.scripts.launch_worker"


def _plan(nproc: int = 2):
    # No port given: torchrun binds one itself, so tests running side by side never meet at one port.
    plan = build_plan(LaunchRequest(nproc_per_node=nproc), Detected(cpus=2), {})
    assert plan.master_port is None
    return plan


@contextlib.contextmanager
def _held(port: int) -> Iterator[None]:
    """Keep ``port`` busy: listen on it, or leave it to whoever already does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        with contextlib.suppress(OSError):  # already in use: busy all the same
            s.bind(("", port))
            s.listen()
        yield


@pytest.fixture(autouse=True)
def _pythonpath(monkeypatch: pytest.MonkeyPatch) -> None:
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{path}" if path else str(ROOT))


@pytest.mark.slow
def test_two_process_gloo_allreduce_with_rank_logs(tmp_path: Path) -> None:
    out = tmp_path / "sum.json"
    code = run_plan(_plan(), Worker(WORKER, ["allreduce", str(out)]), tmp_path / "logs")
    assert code == 0
    result = json.loads(out.read_text())
    assert (result["sum"], result["world"], result["MASTER_ADDR"]) == (3.0, 2, "127.0.0.1")
    assert int(result["MASTER_PORT"]) > 0  # torchrun's own store port, handed to the workers
    for rank in (0, 1):
        log = (tmp_path / "logs" / f"rank{rank}.log").read_text()
        assert f"hello from rank {rank} of 2" in log
        assert (tmp_path / "logs" / f"rank{rank}.exitcode").read_text().split()[0] == "0"


@pytest.mark.slow
def test_two_launches_at_once_while_29500_is_held_both_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Through plan_for, as every command's LaunchArgs.plan does; no port given anywhere. ~15 s on 2 cores.
    for name in ("MASTER_PORT", "MASTER_ADDR", "LOCAL_RANK", "NNODES", "NODE_RANK", "NPROC_PER_NODE"):
        monkeypatch.delenv(name, raising=False)
    with _held(DEFAULT_PORT):
        plans = [plan_for(LaunchRequest(nproc_per_node=2, device="cpu")) for _ in range(2)]
        assert [(p.backend, p.master_port, p.warnings) for p in plans] == [("torchrun", None, ())] * 2
        outs = [tmp_path / f"sum{i}.json" for i in range(2)]

        def one(i: int) -> int:
            return run_plan(plans[i], Worker(WORKER, ["allreduce", str(outs[i])]), tmp_path / f"logs{i}")

        with ThreadPoolExecutor(2) as pool:
            codes = list(pool.map(one, range(2)))
    assert codes == [0, 0]
    results = [json.loads(out.read_text()) for out in outs]
    assert [(r["sum"], r["world"]) for r in results] == [(3.0, 2)] * 2
    assert all(int(r["MASTER_PORT"]) != DEFAULT_PORT for r in results)  # each torchrun's own store port


@pytest.mark.slow
def test_launch_succeeds_when_the_probed_free_port_is_taken_before_it_starts(tmp_path: Path) -> None:
    # The race made certain: 29500 busy, and the spare port the probe found free taken before the launch.
    # A plan that named the spare port would fail its rendezvous; torchrun binding port 0 does not care.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("", 0))
        taken.listen()
        spare = taken.getsockname()[1]
        plan = build_plan(
            LaunchRequest(nproc_per_node=2),
            Detected(cpus=2, busy_ports=frozenset({DEFAULT_PORT}), spare_port=spare),
            {},
        )
        out = tmp_path / "sum.json"
        assert run_plan(plan, Worker(WORKER, ["allreduce", str(out)]), tmp_path / "logs") == 0
    result = json.loads(out.read_text())
    assert result["sum"] == 3.0 and int(result["MASTER_PORT"]) != spare


@pytest.mark.slow
def test_worker_exit_code_passes_through(tmp_path: Path) -> None:
    assert run_plan(_plan(), Worker(WORKER, ["exit", "1", "7"]), tmp_path / "logs") == 7


@pytest.mark.slow
def test_worker_killed_by_signal_gives_128_plus_n(tmp_path: Path) -> None:
    assert run_plan(_plan(), Worker(WORKER, ["kill", "1"]), tmp_path / "logs") == 128 + signal.SIGKILL


@pytest.mark.slow
def test_sigterm_is_forwarded_to_every_worker(tmp_path: Path) -> None:
    mark = tmp_path / "got"

    def send_when_ready() -> None:
        deadline = time.time() + 60
        while time.time() < deadline:
            if all(Path(f"{mark}.ready{r}").exists() for r in (0, 1)):
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)

    threading.Thread(target=send_when_ready, daemon=True).start()
    code = run_plan(_plan(), Worker(WORKER, ["wait", str(mark)]), tmp_path / "logs")
    assert code == 143
    for rank in (0, 1):
        assert Path(f"{mark}.rank{rank}").read_text() == f"[{int(signal.SIGTERM)}]"


@pytest.mark.slow
def test_deepspeed_runner_on_this_host_runs_both_ranks_and_passes_codes_through(tmp_path: Path) -> None:
    # The deepspeed backend for real, without a hostfile (one node: the runner starts its local launcher;
    # with a hostfile it wants ssh even for localhost, see test_launch_plan.py). 10-20 s: two launches.
    pytest.importorskip("deepspeed")
    from vggtctl.launch.detect import free_port

    plan = build_plan(
        LaunchRequest(launcher="deepspeed", nproc_per_node=2, master_port=free_port()),
        Detected(cpus=2, deepspeed=True),
        {},
    )
    assert plan.backend == "deepspeed"
    out = tmp_path / "sum.json"
    assert run_plan(plan, Worker(WORKER, ["allreduce", str(out)]), tmp_path / "logs") == 0
    result = json.loads(out.read_text())
    assert (result["sum"], result["world"], result["MASTER_PORT"]) == (3.0, 2, str(plan.master_port))
    for rank in (0, 1):
        assert f"hello from rank {rank} of 2" in (tmp_path / "logs" / f"rank{rank}.log").read_text()
    assert run_plan(plan, Worker(WORKER, ["exit", "1", "7"]), tmp_path / "logs2") == 7


def test_inprocess_plan_calls_main_here(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = build_plan(LaunchRequest(), Detected(), {})
    assert plan.backend == "inprocess"
    assert run_plan(plan, Worker(WORKER, ["exit", "0", "5"]), tmp_path / "logs") == 5
    assert "hello from rank 0 of 1" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("rc", "recorded", "reported", "code"),
    [
        (0, [(1.0, 0), (2.0, 0)], [], 0),
        (1, [(2.0, 143), (1.0, 3)], [], 3),  # the earliest failure, not the ones it caused
        (1, [(1.0, 0)], [-9], 137),
        (1, [], [1], 1),
        (-15, [], [], 143),
        (1, [], [], 1),
    ],
)
def test_exit_code_rules(rc, recorded, reported, code) -> None:
    assert exit_code(rc, recorded, reported) == code


def test_worker_module_must_exist(tmp_path: Path) -> None:
    plan = build_plan(LaunchRequest(), Detected(), {})
    assert run_plan(plan, Worker("tests.scripts.no_such_worker", []), tmp_path) == 2
    assert sys.modules.get("tests.scripts.no_such_worker") is None


@pytest.mark.parametrize("echo", [True, False])
def test_rank_log_keeps_the_command_stdout_for_its_result(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], echo: bool
) -> None:
    # What a worker prints on fd 1 (its own lines, DeepSpeed's logger, native code) goes to its rank log and,
    # on rank 0, to the terminal's stderr: the command's stdout stays one --json document.
    from vggtctl.launch.rank_logs import tee_to_rank_log

    log = tmp_path / "logs" / "rank0.log"
    with tee_to_rank_log(log, echo=echo):
        os.write(1, b"worker stdout line\n")
        os.write(2, b"worker stderr line\n")
    captured = capfd.readouterr()
    assert captured.out == ""
    assert ("worker stdout line" in captured.err, "worker stderr line" in captured.err) == (echo, echo)
    assert log.read_text() in (
        "worker stdout line\nworker stderr line\n",
        "worker stderr line\nworker stdout line\n",
    )
