"""The ``train-vln`` training loop, in one process (one device).

Phases, top to bottom: load the data and both encoders; build the VLN model and choose what trains;
optimizer (per-group learning rates) and cosine schedule with warmup; the run directory and resume; the
step loop (data -> VGGT tokens -> Qwen forward/backward, ``grad_accum`` times -> clip -> optimizer step),
timing every phase so ``metrics.jsonl`` says where the time goes; checkpoints; the final export.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from vggtctl.errors import Interrupted, UsageError
from vggtctl.progress import NULL_PROGRESS, Progress
from vggtctl.runs import RunDir, format_event_line, format_step_line
from vggtctl.runtime.device import resolve_device
from vggtctl.runtime.dist import init_distributed
from vggtctl.runtime.zero import single_process_group
from vggtctl.services.model_loader import load_model
from vggtctl.services.provenance import provenance_of
from vggtctl.services.vln.checkpoint import EXPORT, TrainState, latest_checkpoint
from vggtctl.services.vln.config import VlnTrainConfig
from vggtctl.services.vln.dataset import EpochSampler, VlnBatch, VlnDataset, make_loader
from vggtctl.services.vln.engines import DeepSpeedEngine, PlainEngine
from vggtctl.services.vln.loading import load_qwen
from vggtctl.services.vln.model import Spatial, TrainGroups, VlnModel
from vggtctl.services.vln.records import read_records
from vggtctl.services.vln.spatial import spatial_tokens


@dataclass
class TrainResult:
    """What a run did."""

    run_dir: str
    export_dir: str
    steps: int
    total_steps: int
    resumed_from: int | None
    loss: float | None
    samples: int
    mean_step_time: float | None
    mean_data_time: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cosine_with_warmup(total: int, warmup_ratio: float):  # type: ignore[no-untyped-def]
    """``lr(step) / base``: linear 0 -> 1 over ``ceil(ratio · total)`` steps, then cosine to 0."""
    warmup = math.ceil(warmup_ratio * total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def param_groups(model: VlnModel, config: VlnTrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: LLM at ``lr_llm``, both mergers at ``lr_merger``; no decay on biases and norms.

    A tied ``lm_head`` (Qwen2.5-VL-3B) is the embedding's parameter: it is listed once.
    """
    groups = []
    seen: set[int] = set()
    for name, lr, named in (
        ("llm", config.lr_llm, model.llm_parameters()),
        ("merger", config.lr_merger, model.qwen_merger_parameters() + model.vggt_merger_parameters()),
    ):
        live = [p for _, p in named if p.requires_grad and not (id(p) in seen or seen.add(id(p)))]
        decay = [p for p in live if p.dim() > 1]
        plain = [p for p in live if p.dim() <= 1]
        if decay:
            groups.append({"name": name, "params": decay, "lr": lr, "weight_decay": config.weight_decay})
        if plain:
            groups.append({"name": name + "_no_decay", "params": plain, "lr": lr, "weight_decay": 0.0})
    return groups


def batch_spatial(vggt: torch.nn.Module, batch: VlnBatch, layer: int, cache: Any = None,
                  required: bool = False) -> list[Spatial]:  # fmt: skip
    """Each sample's VGGT tokens (its current frame after its history): from ``cache`` on a hit, else live.

    ``cache`` is a :class:`~vggtctl.services.vlncache.reader.FeatureCache` opened by
    :func:`~vggtctl.services.vln.cached.open_run_cache`; ``required`` turns a miss into a
    :class:`~vggtctl.services.vlncache.reader.CacheMissError`.
    """
    out = []
    for sid, frames, paths in zip(batch.ids, batch.frames, batch.image_paths, strict=True):
        found = None
        if cache is not None:
            from vggtctl.services.vln.cached import cached_spatial

            found = cached_spatial(cache, sid, paths, vggt.aggregator.compute_dtype, frames.device, required)
        out.append(found if found is not None else Spatial(*spatial_tokens(vggt, frames, layer)))
    return out


class _Batches:
    """Batches forever, epoch after epoch, each epoch's order from (seed, epoch); remembers the position."""

    def __init__(self, dataset: VlnDataset, config: VlnTrainConfig, pad_id: int, epoch: int, position: int,
                 rank: int = 0, world: int = 1) -> None:  # fmt: skip
        self.dataset, self.config, self.pad_id = dataset, config, pad_id
        self.rank, self.world = rank, world
        self.epoch, self.position = epoch, position
        self._it: Iterator[VlnBatch] | None = None

    def _loader(self) -> Iterator[VlnBatch]:
        c = self.config
        sampler = EpochSampler(len(self.dataset), c.seed, self.epoch, self.position, self.rank, self.world)
        loader = make_loader(
            self.dataset, sampler, batch_size=c.batch_size, num_workers=c.num_workers,
            pin_memory=c.pin_memory, prefetch_factor=c.prefetch_factor, pad_id=self.pad_id,
        )  # fmt: skip
        return iter(loader)

    def next(self) -> VlnBatch:
        for _ in range(2):
            if self._it is None:
                self._it = self._loader()
            batch = next(self._it, None)
            if batch is not None:
                self.position += len(batch)
                return batch
            self._it, self.epoch, self.position = None, self.epoch + 1, 0
        raise UsageError("the data gives no batch", "check --data")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def train_vln(config: VlnTrainConfig, progress: Progress = NULL_PROGRESS) -> TrainResult:
    """Train (or resume) a VLN model as ``config`` says; writes the run directory and the export.

    Raises:
        ConfigError: Bad settings (all listed).
        InputError: Unreadable data or models.
        Interrupted: Ctrl-C; the newest checkpoint is intact and ``resume=auto`` continues from it.
    """
    config.validate()
    device = resolve_device(config.device)
    if config.deepspeed is not None:
        single_process_group(device)
    info = init_distributed(device)
    cuda = device.startswith("cuda")
    if cuda and info.distributed:
        device = f"cuda:{info.local_rank}"

    # -- data and encoders ----------------------------------------------------------------------------
    records = read_records(config.data, config.image_root)
    qwen, tokenizer, image_processor = load_qwen(config.model)
    vggt = load_model(config.vggt, device=device, dtype="bf16" if cuda else None, progress=progress)
    for p in vggt.parameters():
        p.requires_grad_(False)
    dataset = VlnDataset(records, tokenizer, image_processor, config.image_width)
    cache = None
    if config.cache_dir:
        from vggtctl.services.vln.cached import open_run_cache

        cache = open_run_cache(config.cache_dir, vggt, config.vggt_layer, config.image_width)

    # -- model, trainable groups, optimizer, schedule -------------------------------------------------
    torch.manual_seed(config.seed)
    context_dim = 2 * vggt.aggregator.embed_dim
    model = VlnModel(qwen, context_dim, config.merger_hidden, config.lam, config.tile_spatial).to(device)
    model.set_trainable(TrainGroups(config.train_llm, config.train_qwen_merger, config.train_vggt_merger))
    if config.grad_checkpointing:
        qwen.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    micro_per_epoch = math.ceil(len(dataset) / info.world_size / config.batch_size)
    total = config.max_steps or max(1, math.ceil(micro_per_epoch * config.epochs / config.grad_accum))
    schedule = cosine_with_warmup(total, config.warmup_ratio)
    if config.deepspeed is not None:
        from vggtctl.runtime.zero import fill_zero_config, read_zero_config

        ds_config = fill_zero_config(
            read_zero_config(config.deepspeed), batch_size=config.batch_size, grad_accum=config.grad_accum,
            world_size=info.world_size, max_grad_norm=config.max_grad_norm,
            hidden_size=qwen.config.text_config.hidden_size, bf16=cuda, command="train-vln",
        )  # fmt: skip
        groups = param_groups(model, config)
        engine: Any = DeepSpeedEngine(model, groups, schedule, ds_config, config.ds_cpu_adam)
    else:
        optimizer = torch.optim.AdamW(param_groups(model, config), betas=(0.9, 0.999), eps=1e-8)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        engine = PlainEngine(model, optimizer, scheduler, config.grad_accum, config.max_grad_norm,
                             info.world_size, device)  # fmt: skip

    # -- run directory and resume ---------------------------------------------------------------------
    meta = {
        "model": {"qwen": config.model, "vggt": asdict(provenance_of(vggt)) if provenance_of(vggt) else None}
    }
    run = RunDir.create(config.output_dir, config, meta, total_steps=total, exist_ok=config.resume == "auto")
    state = TrainState()
    resumed_from = None
    last = latest_checkpoint(run) if config.resume == "auto" else None
    if last is not None:
        state = engine.load(last)
        resumed_from = state.step
        progress.log(f"resumed from {last} (step {state.step})")
    batches = _Batches(
        dataset, config, tokenizer.pad_token_id, state.epoch, state.position, info.rank, info.world_size
    )
    writer = None
    if run.is_writer:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run.tb_dir))
    rank_log = run.open_rank_log()
    task = progress.task("train-vln", total=total, unit="step")
    task.update(completed=state.step)
    times: list[tuple[float, float]] = []
    try:
        # -- the step loop ----------------------------------------------------------------------------
        while state.step < total:
            t_step = time.perf_counter()
            data_t = vggt_t = fwd_t = 0.0
            losses, n_samples = [], 0
            for _ in range(config.grad_accum):
                t0 = time.perf_counter()
                batch = batches.next().to(device)
                t1 = time.perf_counter()
                spatial = batch_spatial(vggt, batch, config.vggt_layer, cache, config.cache_required)
                _sync(device)
                t2 = time.perf_counter()
                # bf16 autocast on GPU (weights and optimizer state stay fp32); fp32 on CPU.
                with torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext():
                    out = engine.forward(
                        batch.input_ids, batch.attention_mask, batch.pixel_values, batch.image_grid_thw,
                        batch.images_per_sample, spatial, labels=batch.labels,
                    )  # fmt: skip
                engine.backward(out.loss)
                engine.micro_step()
                _sync(device)
                t3 = time.perf_counter()
                data_t, vggt_t, fwd_t = data_t + t1 - t0, vggt_t + t2 - t1, fwd_t + t3 - t2
                losses.append(float(out.loss.detach()))
                n_samples += len(batch)
            t4 = time.perf_counter()
            lr, lr_merger = engine.lrs()
            engine.step()
            _sync(device)
            t5 = time.perf_counter()
            state.step += 1
            state.micro_steps += config.grad_accum
            state.samples += n_samples
            state.epoch, state.position = batches.epoch, batches.position
            state.loss = _mean_over_ranks(sum(losses) / len(losses), device)
            step_time = t5 - t_step
            times.append((step_time, data_t))
            frames = dataset.frames
            record = {
                "step": state.step,
                "loss": state.loss,
                "lr": lr,
                "lr_merger": lr_merger,
                "grad_norm": engine.grad_norm,
                "samples": state.samples * info.world_size,
                "batch_size": n_samples * info.world_size,
                "epoch": state.epoch,
                "step_time": step_time,
                "s_per_it": step_time,
                "samples_per_s": n_samples * info.world_size / step_time if step_time > 0 else None,
                "data_time": data_t,
                "vggt_time": vggt_t,
                "fwd_bwd_time": fwd_t,
                "optim_time": t5 - t4,
                **_cache_ratios(cache, device),
                "frame_reuse_ratio": frames.hits / max(1, frames.hits + frames.misses)
                if config.num_workers == 0
                else None,
            }
            if state.step % config.log_steps == 0 or state.step == total:
                run.log_metrics(record)
                rank_log.write(format_step_line(state.step, total, _rank_view(record, info.rank)) + "\n")
                if writer is not None:
                    for key in (
                        "loss",
                        "lr",
                        "step_time",
                        "data_time",
                        "vggt_time",
                        "fwd_bwd_time",
                        "samples_per_s",
                    ):
                        if record[key] is not None:
                            writer.add_scalar(f"train/{key}", record[key], state.step)
                run.set_status(step=state.step)
            task.advance()
            if config.save_steps and state.step % config.save_steps == 0 and state.step < total:
                engine.save(run, state, config.keep_checkpoints)

        # -- the end: last checkpoint and the export --------------------------------------------------
        export = run.path / EXPORT
        if config.final_save:
            if latest_checkpoint(run) != run.checkpoint_dir(state.step):
                engine.save(run, state, config.keep_checkpoints)
            facts = _export_facts(config, context_dim, state.step)
            group, shard = int(config.export_gather_mb * 2**20), int(config.export_shard_mb * 2**20)
            gather = engine.export(export, tokenizer, image_processor, facts, run.is_writer, group, shard)
            if gather is not None:
                rank_log.write(format_event_line("export gather", gather.to_dict()) + "\n")
        run.set_status("finished", step=state.step)
    except KeyboardInterrupt:
        run.set_status("failed", step=state.step, message=f"interrupted at step {state.step}")
        raise Interrupted(
            f"train-vln interrupted at step {state.step}",
            "the newest checkpoint is intact: re-run the same command to resume from it",
        ) from None
    except Exception as e:
        run.set_status(
            "failed", step=state.step, message=str(e).splitlines()[0] if str(e) else type(e).__name__
        )
        raise
    finally:
        task.close()
        rank_log.close()
        if writer is not None:
            writer.close()
        run.close()
    return TrainResult(
        run_dir=str(run.path),
        export_dir=str(export) if config.final_save else "",
        steps=state.step - (resumed_from or 0),
        total_steps=total,
        resumed_from=resumed_from,
        loss=state.loss,
        samples=state.samples,
        mean_step_time=sum(t for t, _ in times) / len(times) if times else None,
        mean_data_time=sum(d for _, d in times) / len(times) if times else None,
    )


def _mean_over_ranks(value: float, device: str) -> float:
    """The mean of ``value`` over all ranks (the loss every rank logs is the global one)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    if torch.distributed.get_world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device if device.startswith("cuda") else "cpu")
    torch.distributed.all_reduce(t)
    return float(t) / torch.distributed.get_world_size()


def _cache_ratios(cache: Any, device: str) -> dict[str, Any]:
    """``cache_hit_ratio`` (all ranks' lookups together) and, with a cache, ``cache_hit_ratio_per_rank``.

    Each rank reads the cache for its own samples, so one rank's misses (a cache built for part of the data)
    show in its own ratio. The counts are summed over the ranks (an all-gather of two numbers per rank).
    """
    if cache is None:
        return {"cache_hit_ratio": 0.0}
    counts = torch.tensor([[cache.hits, cache.misses]], dtype=torch.float64)
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        local = counts.to(device if device.startswith("cuda") else "cpu")
        parts = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local)
        counts = torch.cat(parts).cpu()
    per_rank = [float(h / max(1.0, h + m)) for h, m in counts.tolist()]
    hits, misses = counts.sum(0).tolist()
    return {"cache_hit_ratio": hits / max(1.0, hits + misses), "cache_hit_ratio_per_rank": per_rank}


def _rank_view(record: dict[str, Any], rank: int) -> dict[str, Any]:
    """The record as this rank's log line shows it: its own cache hit ratio instead of every rank's."""
    per_rank = record.get("cache_hit_ratio_per_rank")
    if per_rank is None:
        return record
    view = {k: v for k, v in record.items() if k != "cache_hit_ratio_per_rank"}
    view["rank_cache_hit_ratio"] = per_rank[rank]
    return view


def _export_facts(config: VlnTrainConfig, context_dim: int, step: int) -> dict[str, Any]:
    return {
        "format": "vggtctl-train-vln/1",
        "step": step,
        "base_model": config.model,
        "vggt": str(Path(config.vggt).resolve()) if Path(config.vggt).exists() else config.vggt,
        "vggt_layer": config.vggt_layer,
        "lam": config.lam,
        "tile_spatial": config.tile_spatial,
        "context_dim": context_dim,
        "merger_hidden": config.merger_hidden,
        "image_width": config.image_width,
    }
