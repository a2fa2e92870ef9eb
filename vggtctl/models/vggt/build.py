"""Build VGGT without allocating, load state dicts without copying, infer configs from checkpoints.

``from_state_dict`` builds on the meta device, checks every key and shape (grouped report), then
``load_state_dict(assign=True)``: the model's parameters *are* the given tensors (memory-mapped
safetensors stay file-backed), no random init of 1.26 B parameters, no second copy. The
non-persistent ImageNet mean/std buffers are materialised afterwards.
"""

from __future__ import annotations

import re
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import replace
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vggtctl.errors import CheckpointError, UsageError

from .config import PRESETS, VGGTConfig, preset_name
from .model import VGGT

HEADS = ("camera", "point", "depth", "track")
_LOW_PRECISION = (torch.bfloat16, torch.float16)


def build_empty(config: VGGTConfig) -> VGGT:
    """The model on the meta device: shapes and key names only, no memory, no init.

    Args:
        config: Structure and head switches.
    """
    with torch.device("meta"):
        return VGGT(config)


@lru_cache(maxsize=16)
def expected_shapes(config: VGGTConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """``(key, shape)`` of the state dict of ``config``, in order (built on meta, cached)."""
    return tuple((k, tuple(v.shape)) for k, v in build_empty(config).state_dict().items())


def _group(key: str) -> str:
    """``aggregator.global_blocks.3.attn.qkv.weight`` → ``aggregator.global_blocks.*``."""
    parts = key.split(".")
    out: list[str] = []
    for p in parts[:-1]:
        if p.isdigit():
            break
        out.append(p)
        if len(out) == 3:
            break
    return ".".join(out) + ".*" if out else key


def _grouped(keys: Iterable[str]) -> list[tuple[str, list[str]]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for k in keys:
        groups[_group(k)].append(k)
    return sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def describe_differences(
    expected: Mapping[str, tuple[int, ...]], actual: Mapping[str, tuple[int, ...]], limit: int = 4
) -> tuple[list[str], int]:
    """Grouped, human-readable key/shape differences and their total count.

    Returns:
        ``(lines, count)`` such as ``"missing 24 keys under aggregator.global_blocks.*"``.
    """
    missing = [k for k in expected if k not in actual]
    unexpected = [k for k in actual if k not in expected]
    wrong = [k for k in expected if k in actual and tuple(actual[k]) != tuple(expected[k])]
    lines: list[str] = []
    for label, keys in (("missing", missing), ("unexpected", unexpected)):
        groups = _grouped(keys)
        for g, ks in groups[:limit]:
            lines.append(f"{label} {_plural(len(ks), 'key')} under {g} (e.g. {ks[0]})")
        if len(groups) > limit:
            rest = sum(len(ks) for _, ks in groups[limit:])
            lines.append(f"{label} {_plural(rest, 'more key')} in {len(groups) - limit} other groups")
    groups = _grouped(wrong)
    for g, ks in groups[:limit]:
        k = ks[0]
        lines.append(
            f"{_plural(len(ks), 'key')} with wrong shape under {g} "
            f"(e.g. {k}: checkpoint {list(actual[k])}, model {list(expected[k])})"
        )
    if len(groups) > limit:
        rest = sum(len(ks) for _, ks in groups[limit:])
        lines.append(f"{_plural(rest, 'more key')} with wrong shape in {len(groups) - limit} other groups")
    return lines, len(missing) + len(unexpected) + len(wrong)


def _shape(v: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in v.shape)


def heads_present(keys: Iterable[str]) -> dict[str, bool]:
    """Which heads a checkpoint has, from its key prefixes."""
    keys = list(keys)
    return {h: any(k.startswith(f"{h}_head.") for k in keys) for h in HEADS}


def infer_config(shapes: Mapping[str, tuple[int, ...]]) -> VGGTConfig:
    """The preset (with the heads present) whose state dict has exactly these keys and shapes.

    Args:
        shapes: ``{key: shape}`` of a checkpoint.

    Returns:
        The matching config (``enable_*`` set from the heads present).

    Raises:
        CheckpointError: No preset fits; names the closest preset and the grouped differences.
    """
    shapes = {k: tuple(int(d) for d in v) for k, v in shapes.items()}
    if not shapes:
        raise CheckpointError(
            "the checkpoint is empty (no tensors)", "check the file; re-download or re-export it"
        )
    present = heads_present(shapes)
    best: tuple[int, str, list[str]] | None = None
    for name, preset in PRESETS.items():
        config = replace(preset, **{f"enable_{h}": on for h, on in present.items()})
        expected = dict(expected_shapes(config))
        lines, count = describe_differences(expected, shapes)
        if count == 0:
            return config
        if best is None or count < best[0]:
            best = (count, name, lines)
    assert best is not None
    count, name, lines = best
    heads = ", ".join(h for h, on in present.items() if on) or "none"
    raise CheckpointError(
        f"the checkpoint ({len(shapes):,} keys, heads: {heads}) matches no VGGT preset; closest is {name!r} "
        f"with {_plural(count, 'difference')}: " + "; ".join(lines),
        "check that this is a VGGT checkpoint (facebook/VGGT-1B layout); prefixes like 'module.' must be stripped",
    )


def target_dtype(key: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype ``key`` gets in a model loaded as ``dtype``.

    bf16/fp16 loads keep everything but the aggregator's Linear layers in float32 (as the reference
    runs its heads in float32); a float32 load keeps everything in float32.
    """
    if dtype not in _LOW_PRECISION or not key.startswith("aggregator."):
        return torch.float32
    if re.search(r"\.(qkv|proj|fc1|fc2)\.(weight|bias)$", key):
        return dtype
    return torch.float32


def _as_tensor(value: Tensor | np.ndarray) -> Tensor:
    if not isinstance(value, np.ndarray):
        return value
    if value.flags.writeable:
        return torch.from_numpy(value)
    # Read-only memory maps are fine for inference; torch would warn about every one of them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(value)


def from_state_dict(
    config: VGGTConfig,
    state_dict: Mapping[str, Tensor | np.ndarray],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> VGGT:
    """Build a VGGT whose parameters are the given tensors (strict, no copy when possible, eval mode).

    Args:
        config: Structure and head switches; the state dict must match it exactly.
        state_dict: ``{key: tensor}``; memory-mapped tensors stay memory-mapped (float32 on the
            same device is assigned as is). Keys of heads that ``config`` disables are ignored;
            every other key must match exactly.
        device: Device to put the parameters on (tensors elsewhere are moved: one copy each).
        dtype: None/float32, or bfloat16/float16 for the aggregator's Linear and patch-conv layers
            (qkv, proj, fc1, fc2, patch projection: 99.9 % of its parameters). Norms, LayerScale,
            tokens, pos-embed and all heads stay float32; the aggregator then runs under autocast.

    Returns:
        The model in eval mode.

    Raises:
        CheckpointError: Missing/unexpected/mis-shaped keys (grouped), naming the preset the
            checkpoint looks like when it is another one.
        UsageError: Unsupported dtype.
    """
    if dtype is None:
        dtype = torch.float32
    if dtype not in (torch.float32, *_LOW_PRECISION):
        raise UsageError(f"unsupported model dtype {dtype}", "use float32, bfloat16 or float16")
    device = torch.device(device)
    # Keys of a head the config switches off are dropped on purpose (e.g. no track head: -264 MB).
    disabled = tuple(f"{h}_head." for h in HEADS if h not in config.heads)
    shapes = {k: _shape(v) for k, v in state_dict.items() if not k.startswith(disabled) or not disabled}
    expected = dict(expected_shapes(config))
    lines, count = describe_differences(expected, shapes)
    if count:
        raise CheckpointError(_mismatch_message(config, shapes, lines, count), _mismatch_hint(shapes))
    tensors: dict[str, Tensor] = {}
    for key in expected:
        value = state_dict[key]
        t = _as_tensor(value)
        if not t.is_floating_point():
            raise CheckpointError(
                f"checkpoint key {key} has dtype {t.dtype}, expected a floating point tensor"
            )
        tensors[key] = t.to(device=device, dtype=target_dtype(key, dtype))
    model = build_empty(config)
    model.load_state_dict(tensors, strict=True, assign=True)
    model.aggregator.reset_buffers(device)
    leftovers = [n for n, b in model.named_buffers() if b.is_meta] + [
        n for n, p in model.named_parameters() if p.is_meta
    ]
    if leftovers:  # pragma: no cover - a new buffer without a reset would land here
        raise CheckpointError(f"parameters/buffers left unmaterialised after loading: {leftovers[:5]}")
    return model.eval()


def seeded_model(
    config: VGGTConfig, *, seed: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> VGGT:
    """A VGGT of ``config`` with torch's own random init from ``seed``, built on ``device`` (no checkpoint).

    For timing and memory at full size (step time does not depend on weight values): the weights are
    then placed exactly as :func:`from_state_dict` places a checkpoint's, with the same dtype rules.
    The draws depend on the device's generator, so a GPU and a CPU build differ.
    """
    torch.manual_seed(seed)
    with torch.device(device):
        drawn = VGGT(config)
    return from_state_dict(config, drawn.state_dict(), device=device, dtype=dtype)


def _mismatch_message(
    config: VGGTConfig, shapes: Mapping[str, tuple[int, ...]], lines: list[str], count: int
) -> str:
    name = preset_name(config) or "custom config"
    try:
        other = infer_config(shapes)
    except CheckpointError:
        return f"checkpoint does not fit the {name!r} model: {_plural(count, 'difference')}: " + "; ".join(
            lines
        )
    heads = ", ".join(other.heads) or "none"
    return (
        f"checkpoint is a {preset_name(other)!r} checkpoint (heads: {heads}), not a {name!r} one: "
        f"{_plural(count, 'difference')}: " + "; ".join(lines[:2])
    )


def _mismatch_hint(shapes: Mapping[str, tuple[int, ...]]) -> str:
    try:
        other = infer_config(shapes)
    except CheckpointError:
        return "check that the file is a complete facebook/VGGT-1B-layout checkpoint (re-download it if truncated)"
    heads = {f"enable_{h}": h in other.heads for h in HEADS}
    off = ", ".join(f"{k}=False" for k, on in heads.items() if not on)
    extra = f" with {off}" if off else ""
    return f"load it as preset {preset_name(other)!r}{extra} (or let load_model infer the preset)"
