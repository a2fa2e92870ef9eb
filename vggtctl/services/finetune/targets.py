"""Which layers each strategy trains, and LoRA on them through PEFT.

- a: the depth head (its Linear and Conv2d layers);
- b: aggregator frame and global blocks of the second half (12-23 of VGGT-1B's 24) + the depth head;
- c: every aggregator frame and global block + the depth head + the camera head.

Everything else is frozen. The DINOv2 patch embed is never trained (no strategy names it).
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from vggtctl.services.finetune.config import LoraSettings


def _block_prefixes(model: Any, strategy: str) -> tuple[str, ...]:
    depth = model.config.depth
    if strategy == "a":
        return ()
    first = depth // 2 if strategy == "b" else 0
    return tuple(
        f"aggregator.{kind}_blocks.{i}." for kind in ("frame", "global") for i in range(first, depth)
    )


def _head_prefixes(strategy: str) -> tuple[str, ...]:
    return ("depth_head.", "camera_head.") if strategy == "c" else ("depth_head.",)


def lora_targets(model: nn.Module, strategy: str, convolutions: bool = True) -> list[str]:
    """Exact module names LoRA wraps for ``strategy`` on a plain (unwrapped) VGGT."""
    blocks = _block_prefixes(model, strategy)
    heads = _head_prefixes(strategy)
    names = []
    for name, module in model.named_modules():
        dotted = name + "."
        if type(module) is nn.Linear and dotted.startswith(blocks + heads):
            names.append(name)
        elif convolutions and type(module) is nn.Conv2d and dotted.startswith(heads):
            names.append(name)
    return names


def import_peft() -> Any:
    """``import peft``, without the import-time noise of optional backends it probes (torchao's CUDA
    libraries on a CPU machine, torch's pytree deprecation notes), which says nothing about the run."""
    import logging

    from vggtctl.runtime.deepspeed_logs import deepspeed_logs_to_stderr

    for name in ("torchao", "torchao.kernel.intmm", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    deepspeed_logs_to_stderr()  # PEFT imports transformers, which imports DeepSpeed (its logger: stdout)
    import peft

    return peft


def apply_lora(model: nn.Module, strategy: str, lora: LoraSettings) -> Any:
    """Freeze ``model`` and wrap the strategy's layers in LoRA adapters (a ``peft.PeftModel``)."""
    import_peft()
    from peft import LoraConfig, get_peft_model

    targets = lora_targets(model, strategy, lora.convolutions)
    # One anchored pattern (PEFT full-matches a string): a list would be shortened by PEFT to suffixes that
    # match only the heads present now, and would then also catch the point/track heads of a full model.
    pattern = "|".join(re.escape(t) for t in targets)
    config = LoraConfig(
        target_modules=f"^(?:{pattern})$",
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        bias="none",
    )
    for p in model.parameters():
        p.requires_grad_(False)
    return get_peft_model(model, config)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """``{"trainable": N, "total": M}`` over unique parameters."""
    seen: dict[int, torch.nn.Parameter] = {id(p): p for p in model.parameters()}
    trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
    return {"trainable": trainable, "total": sum(p.numel() for p in seen.values())}
