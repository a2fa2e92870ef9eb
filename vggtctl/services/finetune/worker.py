"""The fine-tuning recipe every rank runs: ``python -m vggtctl.launch.entry ... vggtctl.services.finetune.worker``.

``main(["--run-dir", RUN, ("--resume", CHECKPOINT)])`` reads ``RUN/config.yaml`` (written by the CLI) and
trains. It reads top to bottom: setup, model + LoRA, data, optimizer, resume, the loop (micro-steps,
step, logging, validation, checkpoints, stop on SIGTERM/SIGINT), the final adapter. Exit codes: 0 done,
1 failure, 2 a checkpoint this run cannot continue, 130 stopped by SIGINT, 143 by SIGTERM (both after
writing a checkpoint).

Two engines update the weights. DDP (the default): ``loss / accum_steps`` backward, gradients averaged
across processes, clipped, AdamW, the LambdaLR schedule. DeepSpeed ZeRO-2 (``launch.deepspeed``): the same
torch AdamW and LambdaLR handed to ``deepspeed.initialize`` as client optimizer and scheduler, DeepSpeed
dividing by the accumulation steps, averaging and clipping (``gradient_clipping`` = ``optimizer.grad_clip``),
each rank holding its share of the optimizer state; weights stay fp32 with the same autocast as DDP.
ZeRO checkpoints go through ``save_checkpoint``/``load_checkpoint`` into the same atomic
``checkpoints/step_N/`` folder, next to the PEFT adapter export.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from vggtctl.errors import VggtctlError
from vggtctl.launch.entry import TEED_ENV
from vggtctl.runs import RunDir, format_step_line
from vggtctl.runtime.dist import DistInfo, init_distributed
from vggtctl.services.finetune import checkpoints as ckpt
from vggtctl.services.finetune.adapter import ADAPTER_DIR, write_base_file
from vggtctl.services.finetune.config import FinetuneConfig, config_dict, config_from_dict
from vggtctl.services.finetune.data import (
    SampleStream,
    augment,
    load_batch,
    make_split,
    rng_state,
    scene_dirs,
    set_rng_state,
)
from vggtctl.services.finetune.losses import normalize_ground_truth, objective
from vggtctl.services.finetune.targets import apply_lora, parameter_counts

log = logging.getLogger(__name__)
DEBUG_DIR = "debug"


# ----------------------------------------------------------------------------------------------- pieces


def lr_factor(step: int, total: int, warmup_fraction: float, lr: float, min_lr: float) -> float:
    """Linear warmup over ``warmup_fraction`` of the steps, then cosine from ``lr`` to ``min_lr``."""
    warmup = int(total * warmup_fraction)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    floor = min_lr / lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


class StopFlag:
    """SIGTERM/SIGINT set a flag the loop reads between steps (the checkpoint is written by the loop)."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._previous[s] = signal.signal(s, self._set)
        return self

    def _set(self, signum: int, _frame: Any) -> None:
        self.signum = self.signum or signum

    def __exit__(self, *exc: object) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)


def _device(cfg: FinetuneConfig, info: DistInfo) -> str:
    from vggtctl.runtime.device import resolve_device

    device = resolve_device(cfg.device)
    if device == "cuda" and info.distributed:
        device = f"cuda:{info.local_rank}"
    return device


def _amp_dtype(cfg: FinetuneConfig, device: str) -> torch.dtype | None:
    """bf16 autocast on GPU by default, fp32 on CPU unless asked otherwise."""
    if cfg.dtype == "fp32" or (cfg.dtype == "auto" and not device.startswith("cuda")):
        return None
    return torch.float16 if cfg.dtype == "fp16" else torch.bfloat16


def _all_mean(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    if not info.distributed or not values:
        return values
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / info.world_size for k, v in zip(keys, t.tolist(), strict=True)}


def _any(flag: bool, info: DistInfo) -> bool:
    if not info.distributed:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t)
    return bool(t.item() > 0)


def _barrier(info: DistInfo) -> None:
    if info.distributed:
        import torch.distributed as dist

        dist.barrier()


def _to(batch: dict[str, Any], device: str) -> dict[str, Any]:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


@contextlib.contextmanager
def _rank_log(run: RunDir) -> Iterator[Any]:
    """Step lines: to stderr (the launcher's entry copies it into the rank log), or straight to the log."""
    if os.environ.get(TEED_ENV):
        yield sys.stderr
        return
    with run.open_rank_log() as f:
        yield f


def validate(
    model: Any, dataset: Any, items: list[int], cfg: FinetuneConfig, device: str, amp: Any
) -> dict[str, float]:
    """Validation loss and evaluate's metrics (AbsRel, delta1 after per-frame median scaling; camera AUC@30)."""
    from vggtctl.models.vggt.geometry import pose_encoding_to_extri_intri
    from vggtctl.runtime.precision import autocast
    from vggtctl.services.metrics.camera import camera_metrics
    from vggtctl.services.metrics.depth import depth_metrics

    was_training = model.training
    model.eval()
    losses, abs_rel, delta1, auc = [], [], [], []
    with torch.no_grad():
        for i in items[: cfg.run.val_samples]:
            batch = _to(load_batch(dataset, 0, [i]), device)
            with autocast(device, amp):
                preds = model(batch["images"])
            losses.append(float(objective(preds, batch, cfg.loss)["loss_objective"]))
            gt = normalize_ground_truth(batch)
            pred_d = preds["depth"][0, ..., 0].float().cpu().numpy()
            gt_d, valid = gt["depth"][0].cpu().numpy(), gt["valid"][0].cpu().numpy()
            for s in range(pred_d.shape[0]):
                m = valid[s]
                if m.sum() < 10:
                    continue
                scaled = pred_d[s] * np.median(gt_d[s][m]) / max(float(np.median(pred_d[s][m])), 1e-8)
                d = depth_metrics(scaled, gt_d[s], m)
                abs_rel.append(d["abs_rel"])
                delta1.append(d["delta1"])
            if "pose_enc" in preds and pred_d.shape[0] >= 2:
                ext, _ = pose_encoding_to_extri_intri(
                    preds["pose_enc"].float(), pred_d.shape[-2:], build_intrinsics=False
                )
                cam = camera_metrics(
                    ext[0].cpu().double().numpy(), gt["extrinsics"][0].cpu().double().numpy()
                )
                auc.append(cam.auc30)
    model.train(was_training)
    out = {"eval_loss": float(np.mean(losses))} if losses else {}
    if abs_rel:
        out.update(val_abs_rel=float(np.mean(abs_rel)), val_delta1=float(np.mean(delta1)))
    if auc:
        out["val_auc30"] = float(np.mean(auc))
    return out


# ----------------------------------------------------------------------------------------------- recipe


def train(run_path: Path, resume: Path | None) -> int:
    cfg = config_from_dict(yaml.safe_load((run_path / "config.yaml").read_text(encoding="utf-8")))
    zero = cfg.launch.deepspeed is not None
    own_group = False
    if zero:
        from vggtctl.runtime.zero import single_process_group

        own_group = single_process_group(cfg.device if cfg.device != "auto" else _auto_device())
    try:
        with _stdout_to_stderr():
            return _train(cfg, run_path, resume)
    finally:
        if own_group:
            from vggtctl.runtime.zero import end_single_process_group

            end_single_process_group()


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """The worker prints nothing on stdout: the command's stdout carries its result (``--json``) only.

    DeepSpeed logs and reports its op builds on stdout; rank 0's stdout reaches the terminal's. Both the
    file descriptor (native code, DeepSpeed's logger) and ``sys.stdout`` point at stderr meanwhile.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _auto_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _zero_config(cfg: FinetuneConfig, info: DistInfo, device: str, hidden_size: int) -> dict[str, Any]:
    """The DeepSpeed config of the run: the preset or JSON with its ``auto`` values filled from ``cfg``."""
    from vggtctl.runtime.zero import fill_zero_config, offloads_optimizer, read_zero_config

    o = cfg.optimizer
    ds = fill_zero_config(
        read_zero_config(cfg.launch.deepspeed or ""), batch_size=o.batch_size, grad_accum=o.accum_steps,
        world_size=info.world_size, max_grad_norm=o.grad_clip, hidden_size=hidden_size,
        bf16=False, gpu=device.startswith("cuda"), command="finetune",
    )  # fmt: skip
    # Weights and master copy stay fp32 and the forward autocasts exactly as on the DDP path
    # ("auto" precision = off for DeepSpeed here).
    if offloads_optimizer(ds):
        # The client torch AdamW runs on the CPU-resident partition (LoRA's state is small); DeepSpeed
        # otherwise insists on its own CPU Adam, which compiles for a minute on first use.
        ds.setdefault("zero_force_ds_cpu_optimizer", False)
    return ds


def _train(cfg: FinetuneConfig, run_path: Path, resume: Path | None) -> int:
    zero = cfg.launch.deepspeed is not None
    info = init_distributed(cfg.device if cfg.device != "auto" else _auto_device())
    device = _device(cfg, info)
    amp = _amp_dtype(cfg, device)
    engine_name = "deepspeed" if zero else "ddp"
    if resume is not None:
        _check_resumable(resume, engine_name, info.world_size)  # before any model is built
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)

    # -- model + LoRA: every rank builds the same adapter from the same seed
    from vggtctl.services.model_loader import load_model
    from vggtctl.services.provenance import provenance_of

    base = load_model(cfg.model, device=device, revision=cfg.revision)
    base_prov = provenance_of(base)
    base.track_head = None  # never trained here: do not pay for it
    if cfg.loss.point_weight == 0:
        base.point_head = None
    base.aggregator.gradient_checkpointing = cfg.gradient_checkpointing
    base.aggregator.patch_embed.gradient_checkpointing = cfg.gradient_checkpointing
    torch.manual_seed(cfg.seed)
    model = apply_lora(base, cfg.strategy, cfg.lora).to(device)
    model.train()
    counts = parameter_counts(model)
    params = [p for p in model.parameters() if p.requires_grad]
    trained: Any = model
    if info.distributed and not zero:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(
            model,
            device_ids=[info.local_rank] if device.startswith("cuda") else None,
            find_unused_parameters=cfg.loss.camera_weight == 0,
        )

    # -- data
    split = make_split(cfg.data, scene_dirs(cfg.data))
    o = cfg.optimizer
    stream = SampleStream(split.train_items, cfg.data.seed, info.rank, info.world_size, o.batch_size)
    steps_per_epoch = max(1, stream.batches_per_epoch // o.accum_steps)
    total = cfg.run.epochs * steps_per_epoch if cfg.run.epochs else cfg.run.max_steps

    # -- optimizer and schedule
    optimizer = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, o.warmup_fraction, o.lr, o.min_lr)
    )
    aug_gen = torch.Generator().manual_seed(cfg.data.seed * 7919 + info.rank)
    engine: Any = None
    if zero:
        from vggtctl.runtime.deepspeed_logs import deepspeed_logs_to_stderr

        deepspeed_logs_to_stderr()  # its logger writes to stdout otherwise
        import deepspeed

        ds_config = _zero_config(cfg, info, device, base.aggregator.embed_dim)
        engine, optimizer, _, scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config
        )
        trained = engine

    # -- resume: adapter, optimizer, scheduler, data position, random states, step
    step = 0
    if resume is not None:
        state, rng, adapter_dir = ckpt.read_checkpoint(resume, info.rank)
        if engine is not None:
            # the trainable weights, the fp32 partitions, each rank's optimizer shard and the scheduler
            engine.load_checkpoint(str(resume.parent), tag=resume.name, load_module_strict=False)
        else:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(
                model, load_file(str(adapter_dir / "adapter_model.safetensors"), device=device)
            )
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        stream.load_state_dict(state["stream"])
        aug_gen.set_state(
            state["augment_rng"][info.rank] if info.rank < len(state["augment_rng"]) else aug_gen.get_state()
        )
        step = int(state["step"])
        if rng is not None:
            set_rng_state(rng)

    meta = {
        "model": base_prov.to_dict() if base_prov else None,
        "finetune": {
            "strategy": cfg.strategy,
            "trainable_parameters": counts["trainable"],
            "total_parameters": counts["total"],
            "world_size": info.world_size,
            "split": split.how,
            "train_items": len(split.train_items),
            "val_items": len(split.val_items),
            "resumed_from": str(resume) if resume else None,
            "engine": engine_name,
            "deepspeed": cfg.launch.deepspeed,
        },
    }
    run = RunDir.create(run_path, config_dict(cfg), meta, total_steps=total, exist_ok=True, rank=info.rank)
    tb = None
    if run.is_writer:
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(str(run.tb_dir))
    if info.is_rank_zero:
        print(
            f"strategy {cfg.strategy}: {counts['trainable']:,} trainable parameters of {counts['total']:,} "
            f"({100 * counts['trainable'] / counts['total']:.3f}%); {info.world_size} process(es); "
            f"{len(split.train_items)} train / {len(split.val_items)} val samples (split by {split.how})",
            file=sys.stderr,
            flush=True,
        )

    def save(at: int) -> None:
        staging = ckpt.staging_dir(run.checkpoints_dir, at)
        if info.is_rank_zero:
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
        _barrier(info)
        ckpt.write_rank_state(staging, info.rank, rng_state())
        aug_states = [aug_gen.get_state()]
        if info.distributed:
            import torch.distributed as dist

            gathered: list[Any] = [None] * info.world_size
            dist.all_gather_object(gathered, aug_gen.get_state())
            aug_states = gathered
        _barrier(info)
        if engine is not None:
            # every rank: its optimizer shard; rank 0 the trainable weights and the scheduler. No
            # `latest` file: the manifest written last is what makes the folder a checkpoint.
            engine.save_checkpoint(
                str(staging.parent), tag=staging.name, save_latest=False, exclude_frozen_parameters=True
            )
        if info.is_rank_zero:
            state = {
                "stream": stream.state_dict(),
                "augment_rng": aug_states,
                "step": at,
            }
            if engine is None:
                state.update(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict())
            final = run.checkpoint_dir(at)
            manifest = {
                "step": at,
                "total_steps": total,
                "world_size": info.world_size,
                "strategy": cfg.strategy,
                "engine": engine_name,
            }
            (staging / ckpt.ADAPTER).mkdir(parents=True, exist_ok=True)
            write_base_file(staging / ckpt.ADAPTER, meta["model"], cfg.strategy, at)
            # save_pretrained rewrites the folder's PEFT files; the base file written first stays
            ckpt.commit_checkpoint(staging, final, model, state, manifest, cfg.run.keep_last)
        _barrier(info)

    # -- the loop
    from vggtctl.runtime.precision import autocast

    samples_per_step = o.batch_size * o.accum_steps * info.world_size
    started = time.time()
    first_step = step
    with StopFlag() as stop, _rank_log(run) as rank_log:
        try:
            while step < total:
                t0 = time.perf_counter()
                data_time = 0.0
                terms: dict[str, float] = {}
                for micro in range(o.accum_steps):
                    td = time.perf_counter()
                    epoch, items = stream.next()
                    batch = load_batch(split.train, epoch, items)
                    batch = _to(augment(batch, cfg.data, aug_gen), device)
                    data_time += time.perf_counter() - td
                    last = micro == o.accum_steps - 1
                    if engine is not None:
                        if micro == 0:
                            lr = optimizer.param_groups[0]["lr"]  # the last micro-step updates it
                        with autocast(device, amp):
                            preds = engine(batch["images"])
                        losses = objective(preds, batch, cfg.loss)
                        engine.backward(losses["loss_objective"])  # divides by accum_steps itself
                        engine.step()  # clip + AdamW + schedule at the accumulation boundary only
                        for k, v in losses.items():
                            terms[k] = terms.get(k, 0.0) + float(v.detach()) / o.accum_steps
                        continue
                    sync = contextlib.nullcontext() if last or not info.distributed else trained.no_sync()
                    with sync:
                        with autocast(device, amp):
                            preds = trained(batch["images"])
                        losses = objective(preds, batch, cfg.loss)
                        (losses["loss_objective"] / o.accum_steps).backward()
                    for k, v in losses.items():
                        terms[k] = terms.get(k, 0.0) + float(v.detach()) / o.accum_steps
                if cfg.run.save_grads and step == first_step and step == 0 and run.is_writer:
                    from safetensors.torch import save_file

                    (run.path / DEBUG_DIR).mkdir(exist_ok=True)
                    grads = {
                        n: p.grad.detach().cpu().contiguous()
                        for n, p in model.named_parameters()
                        if p.grad is not None
                    }
                    save_file(grads, str(run.path / DEBUG_DIR / "grads_step_1.safetensors"))
                if engine is not None:
                    norm = engine.get_global_grad_norm()
                    grad_norm = float(norm) if norm is not None else float("nan")
                else:
                    grad_norm = torch.nn.utils.clip_grad_norm_(
                        params, o.grad_clip if o.grad_clip > 0 else float("inf")
                    )
                    lr = optimizer.param_groups[0]["lr"]
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                step += 1

                terms = _all_mean(terms, info)
                record: dict[str, Any] = {
                    "step": step,
                    "loss": terms["loss_objective"],
                    **terms,
                    "lr": lr,
                    "grad_norm": float(grad_norm),
                    "samples": step * samples_per_step,
                    "batch_size": samples_per_step,
                    "epoch": stream.epoch,
                    "step_time": time.perf_counter() - t0,
                    "data_time": data_time,
                }
                if not all(math.isfinite(v) for v in terms.values()):
                    raise VggtctlError(
                        f"the loss is not finite at step {step} ({terms})",
                        "lower optimizer.lr (the reference advice is 10% of it) or check the data",
                    )
                stopping = _any(stop.signum != 0, info)
                if (cfg.run.val_every and step % cfg.run.val_every == 0) or step == total:
                    if info.is_rank_zero and split.val_items:
                        record.update(validate(model, split.val, split.val_items, cfg, device, amp))
                if step % cfg.run.log_every == 0 or step == total or stopping:
                    run.log_metrics(record)
                    rank_log.write(format_step_line(step, total, record) + "\n")
                    rank_log.flush()
                    if tb is not None:
                        for k, v in record.items():
                            if k not in ("step", "epoch") and isinstance(v, float):
                                tb.add_scalar(
                                    f"train/{k}" if not k.startswith(("val_", "eval_")) else f"val/{k}",
                                    v,
                                    step,
                                )
                        tb.flush()
                elapsed = time.time() - started
                eta = elapsed / max(step - first_step, 1) * (total - step)
                run.set_status(step=step, total_steps=total, eta_s=round(eta, 1), world_size=info.world_size)
                if (
                    (cfg.run.checkpoint_every and step % cfg.run.checkpoint_every == 0)
                    or step == total
                    or stopping
                ):
                    save(step)
                if stopping:
                    name = signal.Signals(stop.signum).name if stop.signum else "a signal on another rank"
                    run.set_status(
                        "failed",
                        step=step,
                        message=f"stopped by {name} at step {step}; checkpoint written, `--resume auto` continues",
                    )
                    return 128 + (stop.signum or signal.SIGTERM)
        except BaseException as e:
            run.set_status("failed", step=step, message=f"{type(e).__name__}: {e}")
            raise
        finally:
            if tb is not None:
                tb.close()

    # -- the final adapter: RUN/adapter (PEFT format + the base it belongs to)
    if run.is_writer:
        import shutil

        staging = run.path / f".{ADAPTER_DIR}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(str(staging))
        write_base_file(staging, meta["model"], cfg.strategy, step)
        final = run.path / ADAPTER_DIR
        if final.exists():
            old = run.path / f".{ADAPTER_DIR}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(staging, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, final)
    run.set_status("finished", step=step, message=f"adapter in {run.path / ADAPTER_DIR}")
    run.close()
    if info.distributed:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


def _check_resumable(folder: Path, engine: str, world_size: int) -> None:
    """A checkpoint continues only under the engine that wrote it (ZeRO's shards: also the same world size).

    Raises:
        UsageError: Written by the other engine, or a ZeRO checkpoint of another world size (exit 2).
    """
    from vggtctl.errors import UsageError

    manifest = ckpt.read_manifest(folder)
    wrote = manifest.get("engine", "ddp")
    if wrote != engine:
        flag = "with --deepspeed" if wrote == "deepspeed" else "without --deepspeed"
        raise UsageError(
            f"checkpoint {folder} was written by the {wrote} engine; this run uses {engine}",
            f"resume it {flag}, or start a new run (--output-dir elsewhere, or --resume never)",
        )
    if engine == "deepspeed" and int(manifest.get("world_size", world_size)) != world_size:
        raise UsageError(
            f"checkpoint {folder} holds ZeRO optimizer shards of {manifest['world_size']} processes; "
            f"this run has {world_size}",
            f"resume with {manifest['world_size']} processes in all (--nproc-per-node x --nnodes)",
        )


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="vggtctl.services.finetune.worker")
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--resume", type=Path, default=None)
    args = parser.parse_args(list(argv))
    try:
        return train(args.run_dir, args.resume)
    except VggtctlError as e:
        print(f"Error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"Hint: {e.hint}", file=sys.stderr)
        return e.exit_code
