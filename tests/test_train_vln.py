"""train-vln end to end on CPU: tiny Qwen2.5-VL + tiny VGGT + generated trajectories, through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers_cli import run_cli
from tests.vln_fixtures import SMALL, tiny_qwen, trajectories  # noqa: F401 - fixtures
from vggtctl.services.vln.prompt import ACTIONS


def _train(tiny_qwen: Path, data: Path, vggt: Path, out: Path, *extra: str, steps: int = 1):
    return run_cli(
        "train-vln", "--data", data, "--model", tiny_qwen, "--vggt", vggt, "--output-dir", out,
        "--max-steps", steps, "--device", "cpu", "--json", *extra, *SMALL,
    )  # fmt: skip
    # options come before the key=value settings (the settings share the positional slot with the helpers)


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


def test_one_step_writes_the_run_and_an_export_predict_loads(
    tiny_qwen: Path,
    trajectories: Path,
    tiny_checkpoint: Path,
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    r = _train(tiny_qwen, trajectories, tiny_checkpoint, run, "grad_accum=2", "batch_size=2")
    assert r.exit_code == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["steps"] == 1 and result["samples"] == 4 and result["loss"] > 0
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    for key in ("loss", "lr", "step_time", "samples_per_s", "data_time", "vggt_time", "fwd_bwd_time",
                "optim_time", "cache_hit_ratio", "samples"):  # fmt: skip
        assert record[key] is not None, key
    assert record["batch_size"] == 4 and record["samples"] == 4
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == 1 and status["total_steps"] == 1
    assert list((run / "tb").iterdir())  # TensorBoard events
    facts = json.loads((run / "export" / "vln.json").read_text())
    assert facts["lam"] == 0.2 and facts["vggt_layer"] == 22 and facts["context_dim"] == 128

    sample = tmp_path / "sample.json"
    frames = sorted((trajectories / "ep001").glob("step_*.png"))[:3]
    sample.write_text(json.dumps({"id": "s", "images": [str(f) for f in frames], "conversations": [
        {"from": "human", "value": "<image><image>now<image> go"}, {"from": "gpt", "value": "STOP"}]}))  # fmt: skip
    p = run_cli(
        "train-vln",
        "predict",
        "--checkpoint",
        run / "export",
        "--sample",
        sample,
        "--device",
        "cpu",
        "--json",
    )
    assert p.exit_code == 0, p.stderr
    pred = json.loads(p.stdout)
    assert pred["action"] in ACTIONS and set(pred["scores"]) == set(ACTIONS)
    assert pred["action"] == max(pred["scores"], key=pred["scores"].get)

    m = run_cli("monitor", run, "--json")
    assert m.exit_code == 0, m.stderr
    assert '"finished"' in m.stdout

    bad = run_cli("train-vln", "predict", "--checkpoint", run, "--sample", sample)
    assert bad.exit_code == 1 and "--checkpoint " + str(run / "export") in bad.stderr


def test_final_save_false_finishes_without_the_last_checkpoint_or_export(
    tiny_qwen: Path,
    trajectories: Path,
    tiny_checkpoint: Path,
    tmp_path: Path,
) -> None:
    # timing runs at real size: no 70 GB checkpoint or export at the end, the run still finishes
    run = tmp_path / "run"
    r = _train(tiny_qwen, trajectories, tiny_checkpoint, run, "save_steps=0", "final_save=false")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["steps"] == 1
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    assert not (run / "export").exists()
    checkpoints = run / "checkpoints"
    assert not checkpoints.exists() or not any(checkpoints.iterdir())


def test_resume_continues_the_steps_and_the_losses_of_an_uninterrupted_run(
    tiny_qwen: Path,
    trajectories: Path,
    tiny_checkpoint: Path,
    tmp_path: Path,
) -> None:
    args = ("grad_accum=2", "save_steps=2", "lr_llm=1e-3", "lr_merger=1e-3")
    whole = tmp_path / "whole"
    assert _train(tiny_qwen, trajectories, tiny_checkpoint, whole, *args, steps=4).exit_code == 0
    # A run that died after its step-2 checkpoint: what the disk holds then.
    part = tmp_path / "part"
    shutil.copytree(whole, part)
    shutil.rmtree(part / "checkpoints" / "step_0000004")
    shutil.rmtree(part / "export")
    lines = (part / "metrics.jsonl").read_text().splitlines(keepends=True)
    (part / "metrics.jsonl").write_text("".join(lines[:2]))
    again = _train(tiny_qwen, trajectories, tiny_checkpoint, part, *args, steps=4)
    assert again.exit_code == 0, again.stderr
    result = json.loads(again.stdout)
    assert result["resumed_from"] == 2 and result["steps"] == 2
    a, b = _losses(whole), _losses(part)
    assert sorted(b) == [1, 2, 3, 4]
    for step in (3, 4):
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6), step
    assert len({round(v, 6) for v in a.values()}) == 4  # the losses move, so equality means something
    assert (part / "export" / "vln.json").is_file()
    never = _train(tiny_qwen, trajectories, tiny_checkpoint, part, "--resume", "never", *args, steps=4)
    assert never.exit_code == 2 and "already exists" in never.stderr


@pytest.mark.slow
def test_loss_falls_when_overfitting_a_few_samples(
    tiny_qwen: Path,
    trajectories: Path,
    tiny_checkpoint: Path,
    tmp_path: Path,
) -> None:
    run = tmp_path / "overfit"
    r = _train(tiny_qwen, trajectories, tiny_checkpoint, run, "grad_accum=1", "batch_size=8",
               "lr_llm=1e-2", "lr_merger=1e-2", "grad_checkpointing=false", steps=12)  # fmt: skip
    assert r.exit_code == 0, r.stderr
    losses = _losses(run)
    assert losses[12] < 0.6 * losses[1] and losses[12] < min(losses[k] for k in range(1, 6)), losses


def test_bad_settings_are_all_reported_with_exit_2(tiny_qwen: Path, tmp_path: Path) -> None:
    r = run_cli("train-vln", "--data", tmp_path, "--model", tiny_qwen, "lr_llm=-1", "grad_accum=0", "lamda=1")
    assert r.exit_code == 2
    assert "'lamda=1' is not a key=value setting" in r.stderr
    r = run_cli("train-vln", "--data", tmp_path, "lr_llm=-1", "grad_accum=0")
    assert r.exit_code == 2
    assert "grad_accum 0 (must be >= 1)" in r.stderr and "lr_llm -1 (must be >= 0)" in r.stderr
    r = run_cli("train-vln", "--model", tiny_qwen)
    assert r.exit_code == 2 and "--data: is required" in r.stderr


def test_init_tiny_writes_a_folder_from_pretrained_loads(tmp_path: Path) -> None:
    r = run_cli("train-vln", "init-tiny", "--out", tmp_path / "q", "--json")
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    from transformers import AutoImageProcessor, AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(tmp_path / "q")
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "q")
    AutoImageProcessor.from_pretrained(tmp_path / "q")
    assert sum(p.numel() for p in model.parameters()) == info["parameters"]
    for special in ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>", "<|im_start|>", "<|im_end|>"):
        ids = tok(special, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] < model.config.text_config.vocab_size
    assert tok.convert_tokens_to_ids("<|image_pad|>") == model.config.image_token_id
    assert run_cli("train-vln", "init-tiny").exit_code == 2


def test_a_fresh_process_keeps_stdout_json_and_stderr_free_of_import_noise(tmp_path: Path) -> None:
    """transformers' modeling import pulls in DeepSpeed, whose logger wrote "Setting accelerator to CPU" to
    *stdout* ahead of ``--json``, and torchao (the quantize extra), which logged "Failed to load ... _C_mxfp8"
    and pytree Enum notes: on every train-vln, init-tiny and predict in a fresh process."""
    import subprocess
    import sys

    from tests.procs import ROOT, child_env

    cmd = [sys.executable, "-m", "vggtctl", "train-vln", "init-tiny", "--out", str(tmp_path / "q"), "--json"]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["parameters"] > 0, proc.stdout
    assert "Failed to load" not in proc.stderr and "_pytree" not in proc.stderr, proc.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_process_zero2_trains_checkpoints_and_resumes_under_offload_from_the_cache(
    tiny_qwen: Path,
    trajectories: Path,
    tiny_checkpoint: Path,
    tmp_path: Path,
    torch_extensions_dir: Path,
) -> None:
    """ZeRO-2 live, then the resume from step 1 under zero2-offload reading the feature cache: one launch
    covers the offload preset (client AdamW, no cpu_adam build) and the 2-process cache read."""
    pytest.importorskip("deepspeed")
    run = tmp_path / "ds"
    args = ("--nproc-per-node", "2", "grad_accum=2", "save_steps=1", "lr_llm=1e-3", "lr_merger=1e-3")
    first = _train(tiny_qwen, trajectories, tiny_checkpoint, run, "--deepspeed", "zero2", *args, steps=2)
    assert first.exit_code == 0, first.stderr[-3000:]
    assert json.loads(first.stdout)["world_size"] == 2
    ckpt = run / "checkpoints" / "step_0000002"
    assert {"state.json", "mp_rank_00_model_states.pt"} <= {p.name for p in ckpt.iterdir()}
    assert len(list(ckpt.glob("zero_pp_rank_*_optim_states.pt"))) == 2  # one optimizer shard per rank
    assert (run / "export" / "vln.json").is_file() and (run / "logs" / "rank1.log").is_file()
    losses = _losses(run)
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert record["batch_size"] == 4  # 2 ranks x batch 1 x accumulation 2
    assert record["cache_hit_ratio"] == 0.0
    # die after the step-1 checkpoint, resume through DeepSpeed's load_checkpoint, now offloaded and cached
    shutil.rmtree(ckpt)
    shutil.rmtree(run / "export")
    (run / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text().splitlines(keepends=True)[0])
    cache = tmp_path / "cache"
    built = run_cli("cache", "build", "--data", trajectories, "--cache-dir", cache, "--model", tiny_checkpoint,
                    "--device", "cpu", "--dtype", "fp32", "--image-width", "112")  # fmt: skip
    assert built.exit_code == 0, built.stderr
    again = _train(tiny_qwen, trajectories, tiny_checkpoint, run, "--deepspeed", "zero2-offload", "--cache-dir",
                   cache, "--cache-required", *args, "ds_cpu_adam=false", steps=2)  # fmt: skip
    assert again.exit_code == 0, again.stderr[-3000:]
    resumed = _losses(run)
    assert sorted(resumed) == [1, 2]
    # same optimizer math offloaded, fp32 cache values: the live ZeRO-2 run's loss
    assert resumed[2] == pytest.approx(losses[2], rel=1e-5), (losses, resumed)
    step2 = json.loads((run / "metrics.jsonl").read_text().splitlines()[1])
    assert step2["cache_hit_ratio"] == 1.0 and step2["cache_hit_ratio_per_rank"] == [1.0, 1.0]
    assert step2["vggt_time"] < record["vggt_time"]
    assert "rank_cache_hit_ratio=1" in (run / "logs" / "rank1.log").read_text()
    assert (run / "export" / "vln.json").is_file()
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == 2


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_process_zero3_with_tied_embeddings_resumes_and_exports_full_weights(
    trajectories: Path,
    tiny_checkpoint: Path,
    tmp_path: Path,
    torch_extensions_dir: Path,
) -> None:
    """ZeRO-3 partitions every weight (frozen ViT, tied embeddings): training, resume and the gathered export."""
    pytest.importorskip("deepspeed")
    from vggtctl.services.vln.tiny_qwen import write_tiny_qwen

    qwen = write_tiny_qwen(tmp_path / "tied", tie_embeddings=True).path
    run = tmp_path / "z3"
    args = ("--nproc-per-node", "2", "--deepspeed", "zero3", "grad_accum=2", "save_steps=1", "lr_llm=1e-3",
            "lr_merger=1e-3")  # fmt: skip
    first = _train(qwen, trajectories, tiny_checkpoint, run, *args, steps=2)
    assert first.exit_code == 0, first.stderr[-3000:]
    ckpt = run / "checkpoints" / "step_0000002"
    assert len(list(ckpt.glob("zero_pp_rank_*_mp_rank_00_model_states.pt"))) == 2  # weights partitioned
    losses = _losses(run)
    shutil.rmtree(ckpt)
    shutil.rmtree(run / "export")
    (run / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text().splitlines(keepends=True)[0])
    again = _train(qwen, trajectories, tiny_checkpoint, run, *args, steps=2)
    assert again.exit_code == 0, again.stderr[-3000:]
    resumed = _losses(run)
    assert sorted(resumed) == [1, 2] and resumed[2] == pytest.approx(losses[2], rel=1e-5), (losses, resumed)
    assert len({round(v, 6) for v in losses.values()}) == 2

    # The export holds the full (gathered) weights: exactly what DeepSpeed rebuilds from the checkpoint.
    import torch
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from transformers import Qwen2_5_VLForConditionalGeneration

    full = get_fp32_state_dict_from_zero_checkpoint(str(run / "checkpoints"), "step_0000002")
    exported = Qwen2_5_VLForConditionalGeneration.from_pretrained(run / "export")
    assert exported.config.tie_word_embeddings
    assert exported.lm_head.weight.data_ptr() == exported.get_input_embeddings().weight.data_ptr()
    own = dict(exported.named_parameters())
    trained = {k.removeprefix("qwen."): v for k, v in full.items() if k.removeprefix("qwen.") in own}
    assert len(trained) == len(own)
    for name, value in trained.items():
        assert own[name].shape == value.shape and torch.equal(own[name].detach(), value), name
    base = dict(Qwen2_5_VLForConditionalGeneration.from_pretrained(qwen).named_parameters())
    vit, embed = "model.visual.blocks.0.attn.qkv.weight", "model.language_model.embed_tokens.weight"
    assert torch.equal(own[vit], base[vit]) and not torch.equal(own[embed], base[embed])  # frozen vs. trained

    sample = tmp_path / "sample.json"
    frames = sorted((trajectories / "ep001").glob("step_*.png"))[:2]
    sample.write_text(json.dumps({"id": "s", "images": [str(f) for f in frames], "conversations": [
        {"from": "human", "value": "<image>now<image> go"}, {"from": "gpt", "value": "STOP"}]}))  # fmt: skip
    p = run_cli("train-vln", "predict", "--checkpoint", run / "export", "--sample", sample, "--json")
    assert p.exit_code == 0, p.stderr
    assert json.loads(p.stdout)["action"] in ACTIONS


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_process_zero3_export_streams_bounded_groups_into_shards_and_rank0_never_holds_the_model(
    trajectories: Path,
    tiny_checkpoint: Path,
    tmp_path: Path,
    torch_extensions_dir: Path,
) -> None:
    """The ZeRO-3 export never holds more gathered full weights than its bound on any rank (not the model),
    releases each group before the next; rank 0 writes each group into Hugging Face shards as it comes, so it
    never holds more than about a shard plus a group; the shards still equal zero_to_fp32 and load."""
    pytest.importorskip("deepspeed")
    import torch
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from safetensors.torch import load_file
    from transformers import Qwen2_5_VLForConditionalGeneration

    from vggtctl.services.vln.tiny_qwen import write_tiny_qwen

    qwen = write_tiny_qwen(tmp_path / "tied", tie_embeddings=True).path
    run = tmp_path / "z3"
    bound = int(0.15 * 2**20)  # above the biggest tiny weight (147 KiB), a third of the model
    shard = int(0.04 * 2**20)  # below it: that weight gets a shard of its own
    done = _train(qwen, trajectories, tiny_checkpoint, run, "--nproc-per-node", "2", "--deepspeed", "zero3",
                  "lr_llm=1e-3", "lr_merger=1e-3", "export_gather_mb=0.15", "export_shard_mb=0.04",
                  steps=1)  # fmt: skip
    assert done.exit_code == 0, done.stderr[-3000:]

    def gather_stats(rank: int) -> dict[str, int]:
        log = (run / "logs" / f"rank{rank}.log").read_text()
        lines = [x.split(" export gather ")[1] for x in log.splitlines() if " export gather " in x]
        assert len(lines) == 1, log
        return {k: int(v) for k, v in (pair.split("=") for pair in lines[0].split())}

    full = get_fp32_state_dict_from_zero_checkpoint(str(run / "checkpoints"), "step_0000001")
    tied_once = {k: v for k, v in full.items() if "lm_head" not in k}
    model_bytes = sum(v.numel() * v.element_size() for v in tied_once.values())
    zero, one = gather_stats(0), gather_stats(1)
    largest = zero["largest_param_bytes"]
    assert model_bytes > 2 * bound and zero["groups"] >= 3 and shard < largest <= bound
    for stats in (zero, one):
        assert stats["groups"] == zero["groups"]  # every rank took part in every gather
        assert 0 < stats["peak_gathered_bytes"] <= bound, stats
        assert stats["left_gathered_bytes"] == 0, stats  # each group released before the next
    assert one["copied_bytes"] == 0 and one["peak_held_bytes"] == 0 and one["shards"] == 0
    assert zero["copied_bytes"] >= model_bytes  # the whole model went through rank 0's CPU ...
    assert 0 < zero["peak_held_bytes"] <= largest + bound < model_bytes, zero  # ... never all at once

    export = run / "export"
    index = json.loads((export / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in export.glob("model-*-of-*.safetensors"))
    assert len(shards) == zero["shards"] >= 5 and not (export / "model.safetensors").exists()
    assert shards == [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    assert sorted(set(index["weight_map"].values())) == shards
    written = {k: v for name in shards for k, v in load_file(export / name).items()}
    assert set(written) == set(load_file(qwen / "model.safetensors"))  # the base's (today's) keys: tie once
    assert "lm_head.weight" not in written and index["metadata"]["total_size"] == model_bytes - sum(
        v.numel() * v.element_size() for k, v in tied_once.items() if k.startswith("vggt_merger.")
    )
    assert {v.dtype for v in written.values()} == {torch.float32}
    qwen_out = Qwen2_5_VLForConditionalGeneration.from_pretrained(export)
    assert qwen_out.lm_head.weight.data_ptr() == qwen_out.get_input_embeddings().weight.data_ptr()
    merger = load_file(export / "vggt_merger.safetensors")
    own = {**{"qwen." + k: v.detach() for k, v in qwen_out.named_parameters()},
           **{"vggt_merger." + k: v for k, v in merger.items()}}  # fmt: skip
    assert set(own) == set(tied_once)
    for name, value in own.items():
        assert torch.equal(value, full[name]), name

    sample = tmp_path / "sample.json"
    frames = sorted((trajectories / "ep001").glob("step_*.png"))[:2]
    sample.write_text(json.dumps({"id": "s", "images": [str(f) for f in frames], "conversations": [
        {"from": "human", "value": "<image>now<image> go"}, {"from": "gpt", "value": "STOP"}]}))  # fmt: skip
    p = run_cli("train-vln", "predict", "--checkpoint", export, "--sample", sample, "--json")
    assert p.exit_code == 0, p.stderr
    assert json.loads(p.stdout)["action"] in ACTIONS
