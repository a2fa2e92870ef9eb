"""`vggtctl finetune` configuration: presets, --show-config, dotted overrides, bad configs -> exit 2 naming the key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers_cli import run_cli
from vggtctl.services.finetune.config import preset_names, resolve_config


def test_list_presets_json() -> None:
    ran = run_cli("finetune", "--list-presets", "--json")
    assert ran.exit_code == 0
    presets = json.loads(ran.stdout)["presets"]
    assert set(presets) == set(preset_names()) >= {"tiny-smoke", "eth3d-lora"}
    assert all(presets.values())


def test_show_config_applies_preset_flags_then_overrides() -> None:
    ran = run_cli(
        "finetune", "--config", "tiny-smoke", "--strategy", "b", "--max-steps", "7",
        "lora.rank=8", "optimizer.lr=5e-5", "run.max_steps=9", "launch.nccl.NCCL_IB_DISABLE=1",
        "data.scenes=[s1,s2]", "--show-config", "--json",
    )  # fmt: skip
    assert ran.exit_code == 0, ran.stderr
    cfg = json.loads(ran.stdout)
    assert (cfg["model"], cfg["strategy"], cfg["lora"]["rank"], cfg["optimizer"]["lr"]) == (
        "tiny",
        "b",
        8,
        5e-5,
    )
    assert cfg["run"]["max_steps"] == 9  # overrides beat flags
    assert cfg["data"]["image_size"] == 168  # from the preset
    assert cfg["lora"]["alpha"] == 32.0 and cfg["lora"]["dropout"] == 0.1  # defaults
    assert cfg["launch"]["nccl"] == {"NCCL_IB_DISABLE": "1"}
    assert cfg["data"]["scenes"] == ["s1", "s2"]


def test_config_file_layer(tmp_path: Path) -> None:
    f = tmp_path / "mine.yaml"
    f.write_text("strategy: c\nlora:\n  rank: 4\n")
    cfg = resolve_config(str(f), None, ["lora.alpha=8"])
    assert (cfg.strategy, cfg.lora.rank, cfg.lora.alpha) == ("c", 4, 8.0)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--strategy", "z"], "--strategy z"),
        (["lora.rank=0"], "lora.rank 0"),
        (["optimizer.lr=-1e-4"], "optimizer.lr -0.0001"),
        (["lora.rnk=3"], "lora.rnk: unknown key"),
        (["optimizer.lr=fast"], "optimizer.lr"),
        (["--max-step", "3"], "--max-step"),
    ],
)
def test_bad_config_exits_2_naming_the_key(args: list[str], named: str) -> None:
    ran = run_cli("finetune", "--config", "tiny-smoke", *args, "--show-config")
    assert ran.exit_code == 2
    assert ran.stderr.startswith("Error: invalid finetune config")
    assert named in ran.stderr
    assert "Hint:" in ran.stderr


def test_every_problem_at_once() -> None:
    ran = run_cli("finetune", "--strategy", "q", "lora.rank=0", "nope=1", "--show-config")
    assert ran.exit_code == 2
    for part in ("--strategy q", "lora.rank 0", "nope: unknown key"):
        assert part in ran.stderr


def test_data_dir_without_depth_exits_2(synthetic_root: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(synthetic_root / "synth_000", data / "synth_000")
    shutil.rmtree(data / "synth_000" / "ground_truth_depth")
    ran = run_cli("finetune", "--config", "tiny-smoke", "--data", data, "--output-dir", tmp_path / "run")
    assert ran.exit_code == 2
    assert (
        "--data" in ran.stderr and "synth_000" in ran.stderr and "no dense ground-truth depth" in ran.stderr
    )
    assert not (tmp_path / "run").exists()


def test_unknown_preset_or_missing_file() -> None:
    ran = run_cli("finetune", "--config", "no-such-preset", "--show-config")
    assert ran.exit_code == 2
    assert "neither a preset nor a file" in ran.stderr


def test_dry_run_two_nodes_prints_each_node(tmp_path: Path) -> None:
    ran = run_cli(
        "finetune", "--config", "tiny-smoke", "--nnodes", "2", "--nproc-per-node", "2", "--master-addr", "10.0.0.9",
        "--master-port", "29555", "--output-dir", tmp_path / "run", "--dry-run", "--json",
    )  # fmt: skip
    assert ran.exit_code == 0, ran.stderr
    doc = json.loads(ran.stdout)
    assert (doc["backend"], doc["world_size"]) == ("torchrun", 4)
    assert set(doc["commands"]) == {"0", "1"}
    node1 = doc["commands"]["1"]
    assert node1[node1.index("--node-rank") + 1] == "1"
    assert node1[node1.index("--master-addr") + 1] == "10.0.0.9"
    assert "vggtctl.services.finetune.worker" in node1
    assert not (tmp_path / "run").exists()  # a dry run writes nothing


def test_hostfile_reaches_the_deepspeed_runner_command(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("node-a slots=2\nnode-b slots=2\n")
    ran = run_cli(
        "finetune", "--config", "tiny-smoke", "--launcher", "deepspeed", "--hostfile", hosts, "--nnodes", "2",
        "--nproc-per-node", "2", "--master-addr", "node-a", "--output-dir", tmp_path / "run", "--dry-run", "--json",
    )  # fmt: skip
    assert ran.exit_code == 0, ran.stderr
    doc = json.loads(ran.stdout)
    assert (doc["backend"], doc["hostfile"]) == ("deepspeed", str(hosts))
    command = doc["commands"]["0"]
    assert command[command.index("--hostfile") + 1] == str(hosts)
    missing = run_cli("finetune", "--config", "tiny-smoke", "--launcher", "deepspeed", "--hostfile",
                      tmp_path / "nope", "--dry-run")  # fmt: skip
    assert missing.exit_code == 2 and "hostfile" in missing.stderr and "not a file" in missing.stderr
    wrong = run_cli("finetune", "--config", "tiny-smoke", "--hostfile", hosts, "--dry-run")
    assert wrong.exit_code == 2 and "--launcher deepspeed" in wrong.stderr


def test_two_nodes_without_master_addr_exits_2(tmp_path: Path) -> None:
    ran = run_cli(
        "finetune", "--config", "tiny-smoke", "--nnodes", "2", "--dry-run", env={"MASTER_ADDR": None}
    )
    assert ran.exit_code == 2
    assert "--master-addr" in ran.stderr


def test_merge_needs_out_and_a_run(tmp_path: Path) -> None:
    ran = run_cli("finetune", "merge", tmp_path)
    assert ran.exit_code == 2 and "--out" in ran.stderr
    ran = run_cli("finetune", "merge", tmp_path / "missing", "--out", tmp_path / "m")
    assert ran.exit_code == 1 and "does not exist" in ran.stderr


def test_deepspeed_zero2_is_planned_under_torchrun_and_recorded_in_the_config(tmp_path: Path) -> None:
    pytest.importorskip("deepspeed")
    ran = run_cli(
        "finetune", "--config", "tiny-smoke", "--nproc-per-node", "2", "--deepspeed", "zero2-offload",
        "--output-dir", tmp_path / "run", "--dry-run", "--json",
    )  # fmt: skip
    assert ran.exit_code == 0, ran.stderr
    doc = json.loads(ran.stdout)
    assert (doc["backend"], doc["deepspeed"], doc["config"]["launch"]["deepspeed"]) == (
        "torchrun",
        "zero2-offload",
        "zero2-offload",
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("preset", ["zero3", "zero3-offload", "json-stage-3"])
def test_zero3_is_refused_with_its_reason(preset: str, tmp_path: Path) -> None:
    pytest.importorskip("deepspeed")
    if preset == "json-stage-3":
        preset = str(tmp_path / "ds.json")
        Path(preset).write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    ran = run_cli("finetune", "--config", "tiny-smoke", "--deepspeed", preset, "--show-config")
    assert ran.exit_code == 2, ran.stdout
    assert "--deepspeed" in ran.stderr and "ZeRO-3 is not supported by finetune" in ran.stderr
    assert "use zero2 or zero2-offload" in ran.stderr


def test_deepspeed_config_problems_exit_2(tmp_path: Path) -> None:
    pytest.importorskip("deepspeed")
    ran = run_cli(
        "finetune", "--config", "tiny-smoke", "--deepspeed", str(tmp_path / "no.json"), "--show-config"
    )
    assert ran.exit_code == 2 and "not a preset and no such file" in ran.stderr
    ran = run_cli(
        "finetune", "--config", "tiny-smoke", "--deepspeed", "zero2", "run.save_grads=true", "--show-config"
    )
    assert ran.exit_code == 2 and "run.save_grads" in ran.stderr and "ZeRO-2" in ran.stderr
