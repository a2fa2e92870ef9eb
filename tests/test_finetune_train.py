"""`vggtctl finetune` on the tiny model and synthetic scenes: real training steps, real processes.

Each run is small (56 px frames, 2 frames per sample) so the whole file stays within the suite's budget.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers_cli import run_cli
from tests.procs import ROOT, child_env, spawn
from vggtctl.services.finetune.targets import lora_targets

SMALL = [
    "data.image_size=56", "data.max_img_per_gpu=2", "data.samples_per_scene=2", "run.val_samples=1",
    "lora.rank=4", "lora.alpha=8",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # Tiny matrices: more threads only spin against each other on a busy 2-core machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def finetune(data: Path, out: Path, *extra: str) -> dict:
    ran = run_cli(
        "finetune", "--config", "tiny-smoke", "--data", data, "--output-dir", out, "--json", *SMALL, *extra
    )
    assert ran.exit_code == 0, ran.stderr
    return json.loads(ran.stdout)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def adapter_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["a", "b", "c"])
def test_strategy_trains_only_its_layers(strategy: str, synthetic_root: Path, tmp_path: Path) -> None:
    from vggtctl.services.model_loader import load_model

    run = tmp_path / "run"
    finetune(synthetic_root, run, "--strategy", strategy, "--max-steps", "2", "run.val_every=0")
    records = metrics(run)
    assert [r["step"] for r in records] == [1, 2]
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tb").iterdir())
    status = json.loads((run / "status.json").read_text())
    assert (status["state"], status["step"], status["total_steps"]) == (
        "finished",
        2,
        2,
    ) and "eta_s" in status
    for r in records:
        for key in ("loss_camera", "loss_conf_depth", "loss_reg_depth", "loss_grad_depth", "loss_objective"):
            assert torch.isfinite(torch.tensor(r[key])), key
    base = load_model("tiny")
    targets = lora_targets(base, strategy)
    merged = load_model(str(run)).state_dict()
    changed = {k.rsplit(".", 1)[0] for k, v in base.state_dict().items() if not torch.equal(v, merged[k])}
    assert changed, "training changed nothing"
    assert changed <= set(targets)  # nothing outside the strategy's layers moved
    kinds = {t.split(".")[0] + ("." + t.split(".")[1] if t.startswith("aggregator") else "") for t in changed}
    expect = {"a": {"depth_head"}, "b": {"depth_head", "aggregator.frame_blocks", "aggregator.global_blocks"},
              "c": {"depth_head", "camera_head", "aggregator.frame_blocks", "aggregator.global_blocks"}}[strategy]  # fmt: skip
    assert kinds == expect
    if strategy == "b":
        blocks = {int(t.split(".")[2]) for t in changed if t.startswith("aggregator")}
        assert min(blocks) >= 12
    meta = json.loads((run / "meta.json").read_text())
    trainable = meta["finetune"]["trainable_parameters"]
    lora = sum(v.numel() for v in adapter_weights(run / "adapter").values())
    assert trainable == lora


@pytest.mark.slow
def test_resume_equals_uninterrupted(synthetic_root: Path, tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    finetune(
        synthetic_root,
        straight,
        "--max-steps",
        "4",
        "run.checkpoint_every=2",
        "run.val_every=0",
        "run.keep_last=3",
    )
    # The same run stopped after step 2: its later checkpoint, adapter and records gone, then resumed.
    stopped = tmp_path / "stopped"
    shutil.copytree(straight, stopped)
    shutil.rmtree(stopped / "checkpoints" / "step_0000004")
    shutil.rmtree(stopped / "adapter")
    lines = (stopped / "metrics.jsonl").read_text().splitlines()[:2]
    (stopped / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    out = finetune(
        synthetic_root,
        stopped,
        "--max-steps",
        "4",
        "run.checkpoint_every=2",
        "run.val_every=0",
        "--resume",
        "auto",
    )
    assert out["status"]["state"] == "finished"
    a, b = metrics(straight), metrics(stopped)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b, strict=True):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5, abs=1e-6)
        assert rb["lr"] == pytest.approx(ra["lr"], rel=1e-9)
    wa, wb = adapter_weights(straight / "adapter"), adapter_weights(stopped / "adapter")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_merge_outputs_equal_adapter_outputs(synthetic_root: Path, tmp_path: Path) -> None:
    from vggtctl.services.finetune.adapter import load_base_and_adapter
    from vggtctl.services.model_loader import load_model
    from vggtctl.services.provenance import provenance_of

    run = tmp_path / "run"
    finetune(
        synthetic_root, run, "--strategy", "c", "--max-steps", "2", "run.val_every=0", "optimizer.lr=1e-2"
    )
    ran = run_cli("finetune", "merge", run, "--out", tmp_path / "merged", "--json")
    assert ran.exit_code == 0, ran.stderr
    merged_file = tmp_path / "merged" / "model.safetensors"
    keys = set(load_file(str(merged_file)))
    assert keys == set(load_model("tiny").state_dict())  # the facebook/VGGT-1B key layout, every head
    images = torch.rand(1, 2, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    peft_model = load_base_and_adapter(run, merge=False)
    merged = load_model(str(merged_file))
    with torch.no_grad():
        want, got = peft_model(images), merged(images)
    for key in ("depth", "depth_conf", "pose_enc"):
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5)
    base_out = load_model("tiny")(images)["depth"]
    assert not torch.allclose(base_out, want["depth"])  # the adapter does something
    prov = provenance_of(load_model(str(run)))
    assert prov.format == "lora-adapter" and prov.base.source == "tiny" and prov.adapter is not None


@pytest.mark.slow
def test_loss_falls_when_overfitting_one_sample(synthetic_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    finetune(
        synthetic_root, run, "--max-steps", "30", "data.scenes=[synth_000]", "data.samples_per_scene=1",
        "data.split=frames", "data.train_fraction=1.0", "optimizer.lr=3e-3", "optimizer.warmup_fraction=0",
        "lora.dropout=0", "run.checkpoint_every=0", "run.val_every=0",
    )  # fmt: skip
    losses = [r["loss"] for r in metrics(run)]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses


def _subprocess_finetune(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vggtctl", "finetune", "--config", "tiny-smoke", "--data", str(data),
            "--output-dir", str(out), *SMALL, *extra]  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_two_process_gradients_equal_one_process(synthetic_root: Path, tmp_path: Path) -> None:
    common = [
        "--max-steps",
        "1",
        "run.save_grads=true",
        "lora.dropout=0",
        "run.val_every=0",
        "--device",
        "cpu",
    ]
    two = tmp_path / "two"
    with spawn(
        _subprocess_finetune(synthetic_root, two, "--nproc-per-node", "2", "optimizer.batch_size=1", *common),
        cwd=ROOT,
        env=child_env(OMP_NUM_THREADS="1"),
    ) as proc:
        out, err = proc.communicate(timeout=380)
    assert proc.returncode == 0, err.decode()[-3000:]
    assert json.loads((two / "meta.json").read_text())["finetune"]["world_size"] == 2
    assert {p.name for p in (two / "logs").glob("rank*.log")} == {"rank0.log", "rank1.log"}
    one = tmp_path / "one"
    finetune(synthetic_root, one, "optimizer.batch_size=2", *common)
    g2 = load_file(str(two / "debug" / "grads_step_1.safetensors"))
    g1 = load_file(str(one / "debug" / "grads_step_1.safetensors"))
    assert g1.keys() == g2.keys() and len(g1) > 0
    for k in g1:
        torch.testing.assert_close(g2[k], g1[k], rtol=1e-4, atol=1e-7)
    assert metrics(two)[0]["loss"] == pytest.approx(metrics(one)[0]["loss"], rel=1e-5)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_sigterm_leaves_a_checkpoint_that_resumes(synthetic_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cmd = _subprocess_finetune(
        synthetic_root, run, "--max-steps", "40", "run.checkpoint_every=0", "run.val_every=0"
    )
    with spawn(cmd, cwd=ROOT, env=child_env(OMP_NUM_THREADS="1")) as proc:
        deadline = time.time() + 300
        while time.time() < deadline and not (
            (run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text().count("\n") >= 1
        ):
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()[-3000:]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "SIGTERM" in status["message"]
    from vggtctl.services.finetune.checkpoints import latest_checkpoint, read_checkpoint

    ckpt = latest_checkpoint(run / "checkpoints")
    assert ckpt is not None
    state, rng, adapter = read_checkpoint(ckpt, 0)
    stopped_at = state["step"]
    assert 1 <= stopped_at < 40 and rng is not None and (adapter / "adapter_model.safetensors").is_file()
    # resumes from it: only the remaining steps run
    out = finetune(
        synthetic_root, run, "--max-steps", str(stopped_at + 1), "run.checkpoint_every=0", "run.val_every=0"
    )
    assert out["status"]["state"] == "finished" and out["status"]["step"] == stopped_at + 1
    assert metrics(run)[-1]["step"] == stopped_at + 1
    # the monitor reads the run directory
    ran = run_cli("monitor", run, "--json")
    assert ran.exit_code == 0, ran.stderr
    assert os.fspath(run) in ran.stdout or json.loads(ran.stdout)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_process_zero2_checkpoints_resumes_and_equals_the_ddp_path(
    synthetic_root: Path, tmp_path: Path, torch_extensions_dir: Path
) -> None:
    # > 20 s: two 2-process torchrun launches with DeepSpeed (and, on a fresh suite, the shm_comm build
    # shared with train-vln's ZeRO test); the smallest run that still shards an optimizer across ranks.
    pytest.importorskip("deepspeed")
    common = [
        "--max-steps",
        "3",
        "lora.dropout=0",
        "run.val_every=0",
        "run.checkpoint_every=1",
        "--device",
        "cpu",
    ]
    zero = [*common, "--nproc-per-node", "2", "--deepspeed", "zero2", "optimizer.batch_size=1"]
    ds = tmp_path / "ds"
    env = child_env(OMP_NUM_THREADS="1")
    with spawn(_subprocess_finetune(synthetic_root, ds, *zero, "--json"), cwd=ROOT, env=env) as proc:
        out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]
    # stdout is the result alone: DeepSpeed's own prints (logger, op builds) went to stderr
    assert json.loads(out)["status"]["state"] == "finished", out.decode()[:2000]
    meta = json.loads((ds / "meta.json").read_text())["finetune"]
    assert (meta["engine"], meta["deepspeed"], meta["world_size"]) == ("deepspeed", "zero2", 2)
    step2 = ds / "checkpoints" / "step_0000002"
    files = {p.name for p in step2.iterdir()}
    # DeepSpeed's own files (one optimizer shard per rank) next to ours and the PEFT adapter export
    assert {"zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= files
    assert {"mp_rank_00_model_states.pt", "manifest.json", "rng_rank0.pt", "rng_rank1.pt"} <= files
    assert (step2 / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((step2 / "manifest.json").read_text())["engine"] == "deepspeed"
    straight = metrics(ds)
    final_straight = adapter_weights(ds / "adapter")

    # the same global batch (2 samples per step) on the DDP path: one process, batch 2
    ddp = tmp_path / "ddp"
    finetune(synthetic_root, ddp, "optimizer.batch_size=2", *common)
    reference = metrics(ddp)
    assert [r["step"] for r in straight] == [r["step"] for r in reference] == [1, 2, 3]
    for rz, rd in zip(straight, reference, strict=True):
        assert rz["batch_size"] == rd["batch_size"] == 2
        assert rz["loss"] == pytest.approx(rd["loss"], rel=1e-5), (straight, reference)
        assert rz["lr"] == pytest.approx(rd["lr"], rel=1e-9)
        assert rz["grad_norm"] == pytest.approx(rd["grad_norm"], rel=1e-4)
    want = adapter_weights(ddp / "adapter")
    assert final_straight.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(final_straight[k], want[k], rtol=1e-4, atol=1e-6)

    # stopped after step 2: resume through DeepSpeed's load_checkpoint (`--resume auto`) to step 3
    shutil.rmtree(ds / "checkpoints" / "step_0000003")
    shutil.rmtree(ds / "adapter")
    (ds / "metrics.jsonl").write_text(
        "".join((ds / "metrics.jsonl").read_text().splitlines(keepends=True)[:2])
    )
    with spawn(
        _subprocess_finetune(synthetic_root, ds, *zero, "--resume", "auto"), cwd=ROOT, env=env
    ) as proc:
        _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]
    assert "resuming from" in err.decode() and "step_0000002" in err.decode()
    resumed = metrics(ds)
    assert [r["step"] for r in resumed] == [1, 2, 3]
    assert resumed[2]["loss"] == pytest.approx(straight[2]["loss"], rel=1e-6)
    again = adapter_weights(ds / "adapter")
    for k in want:
        torch.testing.assert_close(again[k], final_straight[k], rtol=1e-6, atol=1e-8)


def test_a_checkpoint_continues_only_under_the_engine_that_wrote_it(
    synthetic_root: Path, tmp_path: Path
) -> None:
    pytest.importorskip("deepspeed")
    run = tmp_path / "run"
    finetune(synthetic_root, run, "--max-steps", "2", "run.checkpoint_every=1", "run.val_every=0")
    ran = run_cli(
        "finetune", "--config", "tiny-smoke", "--data", synthetic_root, "--output-dir", run, *SMALL,
        "--max-steps", "3", "run.val_every=0", "--deepspeed", "zero2",
    )  # fmt: skip
    assert ran.exit_code == 2, ran.stderr
    assert "written by the ddp engine; this run uses deepspeed" in ran.stderr
    assert "without --deepspeed" in ran.stderr
    assert os.environ.get("LOCAL_RANK") is None  # the one-process group it made is gone again
