"""``vggtctl finetune``'s configuration: typed dataclasses (the defaults), YAML presets, dotted overrides.

Precedence, lowest first: the dataclass defaults < the preset (``--config NAME``, YAML shipped in
``presets/``) or a YAML file (``--config FILE``) < the command's flags < trailing ``key=value`` overrides
(``lora.rank=8 optimizer.lr=5e-5``, as torchtune and LLaMA-Factory take them).

Merging and type checks are OmegaConf's (structured configs from these dataclasses): it is the library
Hydra and torchtune build on, it knows dotted keys, lists (``data.scenes=[a,b]``) and dicts
(``launch.nccl.NCCL_IB_DISABLE=1``), and it refuses unknown keys and mistyped values with the full key
name, which is what the errors here need. :meth:`FinetuneConfig.validate` then checks the values and
reports every problem at once (``ConfigError``, exit 2). This module never imports torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from vggtctl.errors import ConfigError, Problem

# Keys the command also takes as flags: errors name the flag the user may have typed.
FLAG_OF_KEY = {
    "strategy": "--strategy",
    "data.root": "--data",
    "data.subset": "--subset",
    "data.scenes": "--scenes",
    "model": "--model",
    "output_dir": "--output-dir",
    "run.max_steps": "--max-steps",
    "run.epochs": "--epochs",
    "device": "--device",
    "launch.deepspeed": "--deepspeed",
}


class FinetuneConfigError(ConfigError):
    """A config problem, rendered with the key (``lora.rank 0``) or, for keys with a flag, the flag."""

    def render(self, flags: Any = None) -> str:
        table = {**FLAG_OF_KEY, **(flags or {})}
        return self._join(lambda f: table.get(f, f))


def raise_problems(what: str, problems: list[Problem], hint: str | None = None) -> None:
    """Raise one :class:`FinetuneConfigError` listing every problem, if there is any (exit 2)."""
    if problems:
        raise FinetuneConfigError(what, problems, hint)


STRATEGIES = {
    "a": "depth head",
    "b": "aggregator layers 12-23 (frame and global blocks) + depth head",
    "c": "all aggregator layers + depth head + camera head",
}
SPLITS = ("auto", "scene", "frames")
DTYPES = ("auto", "fp32", "bf16", "fp16")


@dataclass
class LoraSettings:
    """LoRA through PEFT on the strategy's Linear layers (and the DPT head's convolutions)."""

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.1
    convolutions: bool = True  # also the DPT head's Conv2d layers (PEFT's LoRA supports them)


@dataclass
class DataSettings:
    """Where samples come from and how they are drawn (see vggtctl.data.SceneDataset)."""

    root: str | None = None  # folder of ETH3D-layout scenes (--data)
    scenes: list[str] = field(default_factory=list)  # restrict to these scene names
    subset: str | None = None  # e.g. facades (vggtctl.data.eth3d.SUBSETS)
    max_img_per_gpu: int = 4  # frames per sample, the first is the reference
    samples_per_scene: int = 16  # frame sets per scene and epoch
    image_size: int = 518
    mode: str = "crop"
    split: str = "auto"  # scene (needs >= 2 scenes), frames (by frame set), auto (scene when possible)
    train_fraction: float = 0.85
    seed: int = 0
    color_jitter: float = 0.0  # brightness/contrast jitter strength (0 = off)
    aspect_crop: float = 0.0  # random crop of up to this fraction of the width (0 = off)
    cache: bool = True  # ground-truth depth disk cache


@dataclass
class LossSettings:
    """VGGT's training objective (reference TRAINING.md)."""

    camera_weight: float = 2.0
    depth_weight: float = 5.0
    point_weight: float = 0.0  # the point-map loss is off by default
    conf_alpha: float = 0.2
    camera_gamma: float = 0.6  # weight of earlier camera iterations: gamma^(n-1-i)
    grad_scales: int = 4


@dataclass
class OptimizerSettings:
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    min_lr: float = 1e-6
    grad_clip: float = 1.0  # 0 = off
    accum_steps: int = 1
    batch_size: int = 1  # samples per process and micro-step


@dataclass
class RunSettings:
    max_steps: int = 1000
    epochs: int | None = None  # when set, max_steps = epochs x steps per epoch
    log_every: int = 1
    val_every: int = 100  # 0 = only at the end
    val_samples: int = 8
    checkpoint_every: int = 100  # 0 = only at the end
    keep_last: int = 3
    save_grads: bool = False  # write the first step's averaged gradients to RUN/debug/ (distributed checks)


@dataclass
class LaunchSettings:
    nccl: dict[str, str] = field(default_factory=dict)  # NCCL_* variables for the workers, passed as given
    # DeepSpeed ZeRO (--deepspeed): zero2, zero2-offload or a JSON file of stage <= 2; None = DDP
    deepspeed: str | None = None


@dataclass
class FinetuneConfig:
    """Everything one fine-tuning run needs; ``config.yaml`` of the run directory is this, resolved."""

    strategy: str = "a"
    model: str = "facebook/VGGT-1B"
    revision: str | None = None
    output_dir: str = "runs/finetune"
    device: str = "auto"
    dtype: str = "auto"  # bf16 autocast on GPU, fp32 on CPU
    gradient_checkpointing: bool = True
    seed: int = 0
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataSettings = field(default_factory=DataSettings)
    loss: LossSettings = field(default_factory=LossSettings)
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    run: RunSettings = field(default_factory=RunSettings)
    launch: LaunchSettings = field(default_factory=LaunchSettings)

    def validate(self) -> list[Problem]:
        """Every problem of the values (types were checked when merging)."""
        p: list[Problem] = []
        if self.strategy not in STRATEGIES:
            p.append(Problem.of("strategy", f"must be one of {', '.join(STRATEGIES)}", self.strategy))
        if self.lora.rank < 1:
            p.append(Problem.of("lora.rank", "must be at least 1", self.lora.rank))
        if self.lora.alpha <= 0:
            p.append(Problem.of("lora.alpha", "must be positive", self.lora.alpha))
        if not 0 <= self.lora.dropout < 1:
            p.append(Problem.of("lora.dropout", "must be in [0, 1)", self.lora.dropout))
        o = self.optimizer
        if not o.lr > 0:
            p.append(Problem.of("optimizer.lr", "must be positive", o.lr))
        if o.weight_decay < 0:
            p.append(Problem.of("optimizer.weight_decay", "must be >= 0", o.weight_decay))
        if not 0 <= o.warmup_fraction < 1:
            p.append(Problem.of("optimizer.warmup_fraction", "must be in [0, 1)", o.warmup_fraction))
        if o.min_lr < 0 or o.min_lr > o.lr:
            p.append(Problem.of("optimizer.min_lr", "must be in [0, optimizer.lr]", o.min_lr))
        if o.grad_clip < 0:
            p.append(Problem.of("optimizer.grad_clip", "must be >= 0 (0 = off)", o.grad_clip))
        for name in ("accum_steps", "batch_size"):
            if getattr(o, name) < 1:
                p.append(Problem.of(f"optimizer.{name}", "must be at least 1", getattr(o, name)))
        d = self.data
        if d.max_img_per_gpu < 1:
            p.append(Problem.of("data.max_img_per_gpu", "must be at least 1", d.max_img_per_gpu))
        if d.samples_per_scene < 1:
            p.append(Problem.of("data.samples_per_scene", "must be at least 1", d.samples_per_scene))
        if d.image_size <= 0 or d.image_size % 14:
            p.append(Problem.of("data.image_size", "must be a positive multiple of 14 (518)", d.image_size))
        if d.mode not in ("crop", "pad"):
            p.append(Problem.of("data.mode", "must be crop or pad", d.mode))
        if d.split not in SPLITS:
            p.append(Problem.of("data.split", f"must be one of {', '.join(SPLITS)}", d.split))
        if not 0 < d.train_fraction <= 1:
            p.append(Problem.of("data.train_fraction", "must be in (0, 1]", d.train_fraction))
        if not 0 <= d.color_jitter < 1:
            p.append(Problem.of("data.color_jitter", "must be in [0, 1)", d.color_jitter))
        if not 0 <= d.aspect_crop < 0.5:
            p.append(Problem.of("data.aspect_crop", "must be in [0, 0.5)", d.aspect_crop))
        if d.subset is not None:
            from vggtctl.data.eth3d import SUBSETS

            if d.subset not in SUBSETS:
                p.append(Problem.of("data.subset", f"must be one of {', '.join(SUBSETS)}", d.subset))
        loss = self.loss
        for name in ("camera_weight", "depth_weight", "point_weight"):
            if getattr(loss, name) < 0:
                p.append(Problem.of(f"loss.{name}", "must be >= 0", getattr(loss, name)))
        if loss.camera_weight == loss.depth_weight == loss.point_weight == 0:
            p.append(Problem.of("loss.depth_weight", "every loss weight is 0: nothing to train"))
        if loss.conf_alpha < 0:
            p.append(Problem.of("loss.conf_alpha", "must be >= 0", loss.conf_alpha))
        if not 0 < loss.camera_gamma <= 1:
            p.append(Problem.of("loss.camera_gamma", "must be in (0, 1]", loss.camera_gamma))
        if loss.grad_scales < 0:
            p.append(Problem.of("loss.grad_scales", "must be >= 0", loss.grad_scales))
        r = self.run
        if r.max_steps < 1:
            p.append(Problem.of("run.max_steps", "must be at least 1", r.max_steps))
        if r.epochs is not None and r.epochs < 1:
            p.append(Problem.of("run.epochs", "must be at least 1", r.epochs))
        for name in ("val_every", "checkpoint_every", "val_samples"):
            if getattr(r, name) < 0:
                p.append(Problem.of(f"run.{name}", "must be >= 0", getattr(r, name)))
        if r.log_every < 1:
            p.append(Problem.of("run.log_every", "must be at least 1", r.log_every))
        if r.keep_last < 1:
            p.append(Problem.of("run.keep_last", "must be at least 1", r.keep_last))
        if self.dtype not in DTYPES:
            p.append(Problem.of("dtype", f"must be one of {', '.join(DTYPES)}", self.dtype))
        bad = [k for k in self.launch.nccl if not k.startswith("NCCL_")]
        if bad:
            p.append(Problem.of("launch.nccl", "holds NCCL_* variables only", bad))
        if self.launch.deepspeed is not None:
            p += deepspeed_problems(self)
        return p


# ZeRO-3 is refused, not half-supported: it partitions the *weights*, so every rank must take part in
# every forward and every gather. Here validation and the adapter export run on rank 0 alone, and LoRA's
# whole trainable state (<= 1.3 % of VGGT-1B) is already sharded by ZeRO-2; the frozen base weights would
# be the only thing ZeRO-3 adds (bf16 on a GPU: 2.5 GB per rank).
ZERO3_REFUSAL = (
    "ZeRO-3 is not supported by finetune: it shards the frozen base weights, which needs every rank in every "
    "forward (validation and the adapter export run on rank 0 alone); LoRA's trainable state is sharded by "
    "ZeRO-2 already: use zero2 or zero2-offload"
)


def deepspeed_problems(cfg: FinetuneConfig) -> list[Problem]:
    """What is wrong with ``launch.deepspeed`` for finetune (the preset or JSON is read; DeepSpeed is not)."""
    from vggtctl.runtime.zero import read_zero_config, zero_stage

    name = cfg.launch.deepspeed or ""
    raw = read_zero_config(name)  # UsageError (exit 2) for a missing file or bad JSON
    p: list[Problem] = []
    if zero_stage(raw) >= 3:
        p.append(Problem.of("launch.deepspeed", ZERO3_REFUSAL, name))
    if cfg.run.save_grads:
        p.append(
            Problem.of(
                "run.save_grads", "is a DDP check: ZeRO-2 keeps each rank's share of the gradients only"
            )
        )
    return p


# ------------------------------------------------------------------------------------- presets and merging


def preset_names() -> list[str]:
    """Presets shipped with vggtctl (``presets/*.yaml``), sorted."""
    folder = resources.files(__package__) / "presets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_text(name: str) -> str:
    return (resources.files(__package__) / "presets" / f"{name}.yaml").read_text(encoding="utf-8")


def preset_summary(name: str) -> str:
    """The first comment line of a preset (what it is for)."""
    for line in preset_text(name).splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def _load_yaml(config: str) -> tuple[dict[str, Any], str]:
    import yaml

    from vggtctl.errors import UsageError

    if config in preset_names():
        text, where = preset_text(config), f"preset {config}"
    else:
        path = Path(config)
        if not path.is_file():
            raise UsageError(
                f"--config {config!r} is neither a preset nor a file",
                f"presets: {', '.join(preset_names())} (vggtctl finetune --list-presets); or a YAML path",
            )
        text, where = path.read_text(encoding="utf-8"), str(path)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise UsageError(f"{where} is not valid YAML: {e}", "fix the file") from None
    if not isinstance(data, dict):
        raise UsageError(f"{where} is not a mapping of settings", "write key: value pairs")
    return data, where


def _omegaconf_problem(e: Exception, where: str) -> Problem:
    key = getattr(e, "full_key", None) or "config"
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    if type(e).__name__ == "ConfigKeyError":
        return Problem.of(key, f"unknown key (in {where}); {msg}")
    return Problem.of(key, f"{msg} (in {where})")


def resolve_config(
    config: str | None = None,
    flags: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
) -> FinetuneConfig:
    """Defaults < preset or YAML file < flags < ``key=value`` overrides, validated.

    Args:
        config: A preset name or a YAML file.
        flags: Dotted keys set by the command's flags (``{"strategy": "b", "data.root": "d"}``); None skips.
        overrides: ``key=value`` strings.

    Raises:
        ConfigError: Unknown keys, mistyped values or bad values (all at once; exit 2).
        UsageError: A ``--config`` that is neither a preset nor a readable YAML mapping.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    merged = OmegaConf.structured(FinetuneConfig)
    problems: list[Problem] = []
    layers: list[tuple[Any, str]] = []
    if config is not None:
        data, where = _load_yaml(config)
        layers.append((data, where))
    if flags:
        layers.append(({k: v for k, v in flags.items() if v is not None}, "flags"))
    bad = [o for o in overrides or [] if "=" not in o or o.startswith("-") or o.split("=", 1)[0] == ""]
    for item in bad:
        problems.append(Problem.of(item, "is not a key=value override (or an option this command knows)"))
    good = [o for o in overrides or [] if o not in bad]
    for data, where in layers:
        try:
            if where == "flags":
                merged = OmegaConf.merge(
                    merged, OmegaConf.from_dotlist([f"{k}={_dot(v)}" for k, v in data.items()])
                )
            else:
                merged = OmegaConf.merge(merged, data)
        except OmegaConfBaseException as e:
            problems.append(_omegaconf_problem(e, where))
    for item in good:
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as e:
            problems.append(_omegaconf_problem(e, f"override {item}"))
    cfg: FinetuneConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    # The values that did merge are checked too: every problem in one message.
    raise_problems(
        "finetune config",
        problems + cfg.validate(),
        "vggtctl finetune --show-config prints every key and its value",
    )
    return cfg


def _dot(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def config_dict(cfg: FinetuneConfig) -> dict[str, Any]:
    """Plain nested dict (what ``config.yaml`` holds)."""
    return dataclasses.asdict(cfg)


def config_from_dict(data: dict[str, Any]) -> FinetuneConfig:
    """A resolved config read back from a run directory's ``config.yaml`` (validated again)."""
    from omegaconf import OmegaConf

    cfg: FinetuneConfig = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(FinetuneConfig), data))  # type: ignore[assignment]
    raise_problems("finetune config", cfg.validate())
    return cfg
