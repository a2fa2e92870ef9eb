"""``train-vln``'s configuration: one dataclass holds every default; ``key=value`` overrides; all problems at once.

Defaults are JanusVLN's recipe (``scripts/train.sh``): λ = 0.2, VGGT layer 22, merger hidden 4096, LLM
lr 2e-5, mergers 1e-5, batch 1 × accumulation 8, cosine with 3 % warmup, weight decay 0.01, width 644.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from vggtctl.errors import Problem, UsageError, raise_problems

DEFAULT_QWEN = "Qwen/Qwen2.5-VL-7B-Instruct"
DEFAULT_VGGT = "facebook/VGGT-1B"


@dataclass
class VlnTrainConfig:
    """Everything a ``train-vln`` run depends on (saved as the run's ``config.yaml``).

    Attributes:
        data: JSON / JSONL annotation file or trajectory folder.
        image_root: Folder relative image paths of JSON data start from (default: the file's folder).
        model: Qwen2.5-VL Hub id or local ``save_pretrained`` folder (model, tokenizer, image processor).
        vggt: VGGT source for :func:`vggtctl.load_model` (Hub id, file, folder or ``tiny``).
        output_dir: The run directory.
        resume: ``auto`` (continue from the newest complete checkpoint in ``output_dir``) or ``never``.
        max_steps: Optimizer steps to run (0 = from ``epochs``).
        epochs: Passes over the data when ``max_steps`` is 0.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        lam: Fusion weight λ of the 3D tokens.
        vggt_layer: Aggregator layer whose patch tokens are used (22 of 24 for VGGT-1B).
        merger_hidden: Hidden width of the VGGT merger.
        tile_spatial: Add the current frame's 3D tokens to every image of a sample (JanusVLN) or only to
            the current image.
        train_llm: Train the LLM (embeddings, decoder, lm_head).
        train_qwen_merger: Train Qwen's vision-language merger.
        train_vggt_merger: Train the VGGT merger.
        lr_llm: Learning rate of the LLM.
        lr_merger: Learning rate of both mergers.
        weight_decay: AdamW weight decay (not on biases and norm weights).
        warmup_ratio: Share of the steps with linear warmup before the cosine decay.
        max_grad_norm: Gradient clipping (0 = off).
        batch_size: Samples per device per micro-step.
        grad_accum: Micro-steps per optimizer step.
        grad_checkpointing: Recompute the LLM's layers in backward.
        image_width: Width of the shared preprocessing (644; 518 for VGGT's training size).
        num_workers: DataLoader worker processes.
        prefetch_factor: Batches each worker prepares ahead.
        pin_memory: Pin batches for fast copies to the GPU.
        log_steps: Write metrics every N optimizer steps.
        save_steps: Checkpoint every N optimizer steps (0 = only at the end).
        keep_checkpoints: Checkpoints kept (the newest).
        final_save: Write the last checkpoint and the export at the end; false for timing runs (a 7B
            checkpoint with its AdamW state is ~70 GB).
        seed: Seed of the data order and the new weights.
        deepspeed: DeepSpeed ZeRO preset (zero2, zero2-offload, zero3, zero3-offload) or JSON file; None = plain
            PyTorch (DDP with several processes).
        ds_cpu_adam: With an offload preset, step with DeepSpeed's CPU Adam (a C++ op compiled on first use;
            fast); false: torch's AdamW (no build, slower on big models).
        export_gather_mb: Under ZeRO-3, the most MiB of full weights the export gathers at once (a single bigger
            weight is gathered alone); rank 0 copies each group to CPU memory and writes it out before the
            next one.
        export_shard_mb: Under ZeRO-3, the most MiB of one Qwen weight file of the export (a single bigger
            weight alone): the weights are written as they are gathered, in Hugging Face shards
            (``model-00001-of-0000N.safetensors`` + ``model.safetensors.index.json``; a single
            ``model.safetensors`` when the model fits in one), so rank 0 holds about one shard plus one
            gather group in CPU memory, never the whole model.
        cache_dir: VGGT feature cache (``vggtctl cache build``) to read each sample's tokens from; misses
            are encoded live. None = always live.
        cache_required: With ``cache_dir``, a sample missing from the cache is an error, not a live encode.
        nccl: NCCL / GLOO variables for the workers (``nccl.NCCL_IB_HCA=mlx5``), passed through as given.
    """

    data: str = ""
    image_root: str | None = None
    model: str = DEFAULT_QWEN
    vggt: str = DEFAULT_VGGT
    output_dir: str = "runs/train-vln"
    resume: str = "auto"
    max_steps: int = 0
    epochs: float = 1.0
    device: str = "auto"
    lam: float = 0.2
    vggt_layer: int = 22
    merger_hidden: int = 4096
    tile_spatial: bool = True
    train_llm: bool = True
    train_qwen_merger: bool = True
    train_vggt_merger: bool = True
    lr_llm: float = 2e-5
    lr_merger: float = 1e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.03
    max_grad_norm: float = 1.0
    batch_size: int = 1
    grad_accum: int = 8
    grad_checkpointing: bool = True
    image_width: int = 644
    num_workers: int = 4
    prefetch_factor: int = 4
    pin_memory: bool = True
    log_steps: int = 1
    save_steps: int = 1000
    keep_checkpoints: int = 2
    final_save: bool = True
    seed: int = 42
    deepspeed: str | None = None
    ds_cpu_adam: bool = True
    export_gather_mb: float = 256.0
    export_shard_mb: float = 2048.0
    cache_dir: str | None = None
    cache_required: bool = False
    nccl: dict[str, str] = field(default_factory=dict)

    def problems(self) -> list[Problem]:
        """Every bad value, each with its field."""
        out: list[Problem] = []
        if not self.data:
            out.append(Problem.of("data", "is required: a .json/.jsonl file or a trajectory folder"))
        if self.resume not in ("auto", "never"):
            out.append(Problem.of("resume", "must be auto or never", self.resume))
        for name in ("max_steps", "save_steps", "num_workers", "vggt_layer"):
            if getattr(self, name) < 0:
                out.append(Problem.of(name, "must be >= 0", getattr(self, name)))
        for name in (
            "batch_size",
            "grad_accum",
            "merger_hidden",
            "log_steps",
            "prefetch_factor",
            "keep_checkpoints",
        ):
            if getattr(self, name) < 1:
                out.append(Problem.of(name, "must be >= 1", getattr(self, name)))
        for name in ("export_gather_mb", "export_shard_mb"):
            if getattr(self, name) <= 0:
                out.append(Problem.of(name, "must be > 0", getattr(self, name)))
        if self.max_steps == 0 and self.epochs <= 0:
            out.append(Problem.of(("max_steps", "epochs"), "one of them must be > 0"))
        if not 0 <= self.warmup_ratio < 1:
            out.append(Problem.of("warmup_ratio", "must be in [0, 1)", self.warmup_ratio))
        for name in ("lr_llm", "lr_merger", "weight_decay", "max_grad_norm"):
            if getattr(self, name) < 0:
                out.append(Problem.of(name, "must be >= 0", getattr(self, name)))
        if self.image_width <= 0 or self.image_width % 28:
            out.append(
                Problem.of(
                    "image_width",
                    "must be a positive multiple of 28 (Qwen's patch 14 x merge 2)",
                    self.image_width,
                )
            )
        for key in self.nccl:
            if not key.replace("_", "").isalnum() or not key.startswith(("NCCL_", "GLOO_", "TORCH_NCCL_")):
                out.append(Problem.of("nccl", "takes NCCL_*, GLOO_* or TORCH_NCCL_* variables", key))
        if not (self.train_llm or self.train_qwen_merger or self.train_vggt_merger):
            out.append(
                Problem.of(
                    ("train_llm", "train_qwen_merger", "train_vggt_merger"), "at least one must be true"
                )
            )
        if self.cache_required and not self.cache_dir:
            out.append(
                Problem.of(("cache_required", "cache_dir"), "reading a cache requires a cache directory")
            )
        return out

    def validate(self) -> VlnTrainConfig:
        """Raise one :class:`~vggtctl.errors.ConfigError` listing every problem; return self when none."""
        raise_problems(
            "train-vln config", self.problems(), "see `vggtctl train-vln --help` and docs/train-vln.md"
        )
        return self


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(f: dataclasses.Field[Any], text: str) -> Any:
    kind = str(f.type)
    if "bool" in kind:
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError("expected true or false")
    if kind.startswith("int"):
        return int(text)
    if kind.startswith("float"):
        return float(text)
    if "None" in kind and text.lower() in ("none", "null", ""):
        return None
    return text


SETTINGS = tuple(f.name for f in fields(VlnTrainConfig))
"""Every field name, as ``key=value`` overrides spell them."""


def apply_overrides(config: VlnTrainConfig, overrides: list[str]) -> VlnTrainConfig:
    """``key=value`` strings applied to ``config`` (a copy); every bad one reported at once (exit 2)."""
    by_name = {f.name: f for f in fields(VlnTrainConfig)}
    changes: dict[str, Any] = {}
    nccl = dict(config.nccl)
    bad: list[str] = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and key.startswith("nccl.") and len(key) > 5:
            nccl[key[5:]] = value  # an environment variable name keeps its spelling
            continue
        key = key.strip().replace("-", "_")
        if not sep or key not in by_name:
            bad.append(f"{item!r} is not a key=value setting of train-vln")
            continue
        try:
            changes[key] = _convert(by_name[key], value.strip())
        except ValueError as e:
            bad.append(f"{item!r}: {e}")
    if bad:
        raise UsageError(
            "bad train-vln settings: " + "; ".join(bad),
            f"write them as key=value with key one of: {', '.join(SETTINGS)}",
        )
    return dataclasses.replace(config, **changes, nccl=nccl)
