"""DeepSpeed ZeRO configs for every ``--deepspeed`` command (``train-vln``, ``finetune``): presets, ``auto``.

Presets (``vggtctl/runtime/zero_presets/*.json``): ``zero2``, ``zero2-offload`` (optimizer state in CPU
memory), ``zero3``, ``zero3-offload`` (optimizer and parameters in CPU memory); or the user's own JSON.
``auto`` values come from the run: micro batch = ``batch_size``, accumulation = ``grad_accum``, global batch
= both × world size, clipping = ``max_grad_norm``, bf16 on GPUs, bucket sizes from the model width (as
transformers' integration sizes them); ``overlap_comm`` only on GPUs. :func:`single_process_group` gives
a one-process run the process group DeepSpeed insists on. Nothing here imports DeepSpeed (or torch, until
:func:`single_process_group` runs).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from vggtctl.errors import InputError, UsageError

PRESETS = ("zero2", "zero2-offload", "zero3", "zero3-offload")


def read_zero_config(name: str) -> dict[str, Any]:
    """A preset by name, or a DeepSpeed JSON file."""
    if name in PRESETS:
        text = (
            resources.files(__package__).joinpath("zero_presets", f"{name}.json").read_text(encoding="utf-8")
        )
        return json.loads(text)
    path = Path(name)
    if not path.is_file():
        raise UsageError(
            f"--deepspeed {name}: not a preset and no such file",
            f"use one of {', '.join(PRESETS)} or a DeepSpeed JSON file",
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise InputError(f"--deepspeed {path} is not JSON ({e})", "fix the DeepSpeed config file") from None


def _fill(value: Any, auto: Any) -> Any:
    return auto if value == "auto" else value


def fill_zero_config(
    raw: dict[str, Any], *, batch_size: int, grad_accum: int, world_size: int, max_grad_norm: float,
    hidden_size: int, bf16: bool, command: str = "vggtctl", gpu: bool | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``raw`` with every ``"auto"`` replaced by the run's value (a copy; other values are kept).

    ``bf16`` fills ``bf16.enabled: auto`` (DeepSpeed then holds the weights in bf16); ``gpu`` (default:
    ``bf16``) says whether the run is on GPUs, which ``overlap_comm`` needs. ``command`` names the caller in
    the error about ``auto`` values it cannot fill.
    """
    cfg = json.loads(json.dumps(raw))
    cfg["train_micro_batch_size_per_gpu"] = _fill(
        cfg.get("train_micro_batch_size_per_gpu", "auto"), batch_size
    )
    cfg["gradient_accumulation_steps"] = _fill(cfg.get("gradient_accumulation_steps", "auto"), grad_accum)
    cfg["train_batch_size"] = _fill(cfg.get("train_batch_size", "auto"), batch_size * grad_accum * world_size)
    if "gradient_clipping" in cfg:
        cfg["gradient_clipping"] = _fill(cfg["gradient_clipping"], max_grad_norm)
    for key in ("bf16", "fp16"):
        if isinstance(cfg.get(key), dict) and cfg[key].get("enabled") == "auto":
            cfg[key]["enabled"] = bf16 if key == "bf16" else False
    zero = cfg.get("zero_optimization", {})
    if not (bf16 if gpu is None else gpu) and zero.get("overlap_comm"):
        # Overlapping reduction with backward needs CUDA streams: on CPU (gloo) a 2-process ZeRO-2 run
        # with overlap_comm hung before its first step here, and the same run without it trains.
        zero["overlap_comm"] = False
    h2 = hidden_size * hidden_size
    for key, auto in (
        ("reduce_bucket_size", h2),
        ("stage3_prefetch_bucket_size", int(0.9 * h2)),
        ("stage3_param_persistence_threshold", 10 * hidden_size),
    ):
        if key in zero:
            zero[key] = _fill(zero[key], auto)
    left = [k for k, v in _walk(cfg) if v == "auto"]
    if left:
        raise UsageError(
            f"DeepSpeed config keeps 'auto' values {command} cannot fill: {', '.join(left)}",
            "give those keys numbers in your JSON",
        )
    return cfg


def _walk(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(d, dict):
        return [kv for k, v in d.items() for kv in _walk(v, f"{prefix}{k}.")]
    return [(prefix.rstrip("."), d)]


def zero_stage(cfg: dict[str, Any]) -> int:
    """The ZeRO stage of a config (0 when absent)."""
    return int(cfg.get("zero_optimization", {}).get("stage", 0))


def offloads_optimizer(cfg: dict[str, Any]) -> bool:
    """Whether the optimizer state lives in CPU memory (DeepSpeed then wants its CPU Adam)."""
    off = cfg.get("zero_optimization", {}).get("offload_optimizer") or {}
    return off.get("device") in ("cpu", "nvme")


RANK_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def single_process_group(device: str) -> bool:
    """DeepSpeed needs a process group even for one process: a local one, on a free port.

    Left alone when a launcher already set the rank variables (their group is joined by the caller).
    Returns True when it made one (:func:`end_single_process_group` removes it again).
    """
    import os
    import socket

    if "LOCAL_RANK" in os.environ or "RANK" in os.environ:
        return False
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})  # fmt: skip
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return True


def end_single_process_group() -> None:
    """Undo :func:`single_process_group`: a later launch in this process must not look like a torchrun worker."""
    import os

    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    for name in RANK_VARIABLES:
        os.environ.pop(name, None)
