"""How a training step updates the weights: plain PyTorch (one process or DDP) or a DeepSpeed ZeRO engine.

Both give the loop the same calls (``forward``, ``backward``, ``micro_step``, ``step``, ``save``, ``load``,
``export``), so ``train.py`` reads the same whatever runs underneath. The plain
engine writes vggtctl checkpoints (:mod:`vggtctl.services.vln.checkpoint`); the DeepSpeed one writes ZeRO
checkpoints through DeepSpeed's own ``save_checkpoint`` / ``load_checkpoint`` into the same
``checkpoints/step_N/`` folder, and rank 0 writes ``state.json`` last, once every rank has written its shard.
Under ZeRO-3 the export is gathered and written shard by shard (:mod:`vggtctl.services.vln.zero3_export`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from vggtctl.runs import RunDir
from vggtctl.services.vln.checkpoint import STATE, TrainState, export_model, load_checkpoint, save_checkpoint
from vggtctl.services.vln.zero3_export import ExportStats, export_zero3
from vggtctl.utils.atomic import atomic_write_json


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


class PlainEngine:
    """AdamW + LambdaLR on the model itself (wrapped in DDP when the world is larger than one)."""

    def __init__(self, model: Any, optimizer: Any, scheduler: Any, grad_accum: int, max_grad_norm: float,
                 world_size: int, device: str) -> None:  # fmt: skip
        self.module = model
        self.optimizer, self.scheduler = optimizer, scheduler
        self.grad_accum, self.max_grad_norm = grad_accum, max_grad_norm
        if world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [torch.device(device).index] if device.startswith("cuda") else None
            self.wrapped: Any = DistributedDataParallel(model, device_ids=ids)
        else:
            self.wrapped = model
        self.grad_norm: float | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.wrapped(*args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.grad_accum).backward()

    def micro_step(self) -> None:
        """Nothing: gradients accumulate until :meth:`step`."""

    def step(self) -> None:
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.grad_norm = (
            float(torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm))
            if self.max_grad_norm > 0
            else None
        )
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def lrs(self) -> tuple[float, float]:
        return self.optimizer.param_groups[0]["lr"], self.optimizer.param_groups[-1]["lr"]

    def save(self, run: RunDir, state: TrainState, keep: int) -> None:
        if run.is_writer:
            save_checkpoint(run, self.module, self.optimizer, self.scheduler, state, keep)
        _barrier()

    def load(self, path: Path) -> TrainState:
        return load_checkpoint(path, self.module, self.optimizer, self.scheduler)

    def export(self, out: Path, tokenizer: Any, image_processor: Any, facts: dict[str, Any], is_writer: bool,
               group_bytes: int, shard_bytes: int) -> ExportStats | None:  # fmt: skip
        """Rank 0 writes the export from the module's own full weights; returns None (nothing gathered)."""
        if is_writer:
            export_model(out, self.module, tokenizer, image_processor, facts)
        return None


class DeepSpeedEngine:
    """A DeepSpeed engine around the VLN model with the client optimizer and scheduler.

    The client optimizer is torch's AdamW (only DeepSpeed's communication op compiles on CPU). When the config
    offloads the optimizer it is DeepSpeed's CPU Adam (a C++ op, built on first use, several times faster on
    big models), or with ``cpu_adam=False`` still torch's AdamW: DeepSpeed refuses a client optimizer under
    offload unless ``zero_force_ds_cpu_optimizer`` is false, which is then set.
    """

    def __init__(self, model: Any, param_groups: list[dict[str, Any]], schedule: Any, ds_config: dict[str, Any],
                 cpu_adam: bool = True) -> None:  # fmt: skip
        from vggtctl.runtime.deepspeed_logs import deepspeed_logs_to_stderr

        deepspeed_logs_to_stderr()  # its logger writes to stdout otherwise
        import deepspeed

        from vggtctl.runtime.zero import offloads_optimizer, zero_stage

        if offloads_optimizer(ds_config) and cpu_adam:
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            optimizer: Any = DeepSpeedCPUAdam(param_groups, betas=(0.9, 0.999), eps=1e-8)
        else:
            if offloads_optimizer(ds_config):
                ds_config = {**ds_config, "zero_force_ds_cpu_optimizer": False}
            optimizer = torch.optim.AdamW(param_groups, betas=(0.9, 0.999), eps=1e-8)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config
        )
        self.module = self.engine.module
        self.stage = zero_stage(ds_config)
        self.grad_norm: float | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.engine(*args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)  # DeepSpeed divides by the accumulation steps itself

    def micro_step(self) -> None:
        self.engine.step()  # applies the update (and the scheduler) at the accumulation boundary only

    def step(self) -> None:
        norm = self.engine.get_global_grad_norm()
        self.grad_norm = float(norm) if norm is not None else None

    def lrs(self) -> tuple[float, float]:
        groups = self.engine.optimizer.param_groups
        return groups[0]["lr"], groups[-1]["lr"]

    def save(self, run: RunDir, state: TrainState, keep: int) -> None:
        final = run.checkpoint_dir(state.step)
        self.engine.save_checkpoint(str(run.checkpoints_dir), tag=final.name, client_state=asdict(state))
        _barrier()
        if run.is_writer:
            atomic_write_json(final / STATE, asdict(state))
            complete = [p for _, p in run.checkpoints() if (p / STATE).is_file()]
            for old in complete[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        _barrier()

    def load(self, path: Path) -> TrainState:
        self.engine.load_checkpoint(str(path.parent), tag=path.name)
        return TrainState(**json.loads((path / STATE).read_text(encoding="utf-8")))

    def export(self, out: Path, tokenizer: Any, image_processor: Any, facts: dict[str, Any], is_writer: bool,
               group_bytes: int, shard_bytes: int) -> ExportStats | None:  # fmt: skip
        """Write the export; every rank must call it.

        Under ZeRO-3 every rank gathers the weights ``group_bytes`` at a time and rank 0 writes them as they
        come, in Qwen shards of at most ``shard_bytes``; under ZeRO-1/2 the module holds its full weights and
        rank 0 writes them as the plain engine does.

        Returns:
            What this rank gathered and held under ZeRO-3; None under ZeRO-1/2.
        """
        if self.stage < 3:
            if is_writer:
                export_model(out, self.module, tokenizer, image_processor, facts)
            return None
        rank = torch.distributed.get_rank()
        return export_zero3(
            out, self.module, tokenizer, image_processor, facts, rank, group_bytes, shard_bytes
        )
