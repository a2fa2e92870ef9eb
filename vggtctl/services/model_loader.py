"""The one way any command gets a VGGT model: :func:`load_model`.

Sources: a Hub repo id (``facebook/VGGT-1B``), a local file or folder (``.safetensors``; ``.pt``/``.pth``
only through ``torch.load(weights_only=True)``), ``"tiny"`` (the seeded tiny checkpoint, generated
into the vggtctl cache on first use), or ``"seeded:PRESET"`` (e.g. ``seeded:vggt-1b``: the full
architecture with random weights drawn on the device, no file; for timing, never for results). The
preset is inferred from the checkpoint's keys and shapes unless given; loading is strict with a grouped
key report; safetensors are memory-mapped (bf16/fp16 loads convert while reading instead). The model
carries its :class:`Provenance` (source, revision, sha256, preset), read with :func:`provenance_of` (which
looks through DDP/compile/PEFT wrappers).

This module composes the pieces, each of which knows one thing: :mod:`~vggtctl.services.hub`
(repo ids -> local files, a leaf), :mod:`~vggtctl.services.checkpoint_io` (file formats -> state
dicts), :mod:`~vggtctl.models.vggt.tiny` via :mod:`~vggtctl.services.weights` (the tiny checkpoint),
:mod:`~vggtctl.services.hashing` (sha256 once per job) and :mod:`~vggtctl.services.provenance`.

Extension points (quantized artifacts, LoRA run directories): :func:`register_reader` adds a file
format and :func:`register_artifact` adds a loader for a whole artifact (e.g. a folder with a
quantization manifest) that is tried before the plain state-dict path. Both keep resolution
(Hub/local/tiny), hashing and provenance in one place.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vggtctl.errors import InputError, UsageError
from vggtctl.progress import NULL_PROGRESS, Progress
from vggtctl.services.checkpoint_io import (
    is_supported,
    read_safetensors_converted,
    read_state_dict as _read_file,
    register_reader,
    supported_suffixes,
)
from vggtctl.services.hashing import path_sha256
from vggtctl.services.hub import DEFAULT_REPO, fetch_weights, looks_like_repo_id
from vggtctl.services.provenance import (
    AdapterInfo,
    Provenance,
    QuantizationInfo,
    provenance_of,
    set_provenance,
)
from vggtctl.services.weights import TINY_SOURCE, tiny_checkpoint_path

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from vggtctl.models.vggt.config import VGGTConfig
    from vggtctl.models.vggt.model import VGGT

__all__ = [
    "DEFAULT_REPO",
    "AdapterInfo",
    "Artifact",
    "Provenance",
    "QuantizationInfo",
    "ResolvedSource",
    "build_config",
    "load_model",
    "model_from_state_dict",
    "parse_dtype",
    "provenance_of",
    "read_safetensors_converted",
    "read_state_dict",
    "register_artifact",
    "register_reader",
    "resolve_source",
    "seeded_preset",
]

log = logging.getLogger(__name__)

SEEDED_PREFIX = "seeded:"


def seeded_preset(source: str | os.PathLike[str]) -> str | None:
    """The preset a ``seeded:PRESET`` source names (not checked), None for any other source."""
    text = os.fspath(source)
    return text[len(SEEDED_PREFIX) :] if text.startswith(SEEDED_PREFIX) else None


# Folder lookup order: safetensors first (memory-mapped, cannot carry code).
LOCAL_FILENAMES: tuple[str, ...] = ("model.safetensors", "model.pt", "model.pth")


# ---------------------------------------------------------------- artifacts (extension point)

ArtifactDetector = Callable[[Path], bool]
ArtifactLoader = Callable[..., "VGGT"]


@dataclass(frozen=True)
class Artifact:
    """A registered artifact kind: ``detect(path)`` says whether a local path is one, ``load`` builds it."""

    name: str
    detect: ArtifactDetector
    load: ArtifactLoader


_ARTIFACTS: dict[str, Artifact] = {}


def register_artifact(name: str, detect: ArtifactDetector, load: ArtifactLoader) -> None:
    """Register a loader for a whole artifact (quantized export, base + adapter, ...).

    Registering a name again replaces the earlier entry (modules may be imported more than once;
    a kind is never asked twice). Each load asks ``detect(path)`` once per registered kind, in
    registration order, for the resolved local path (file or folder); the first that answers True
    builds the model with ``load(resolved: ResolvedSource, preset=, device=, dtype=, progress=)``.
    The loader returns a VGGT (it may set its own provenance, e.g. with ``base``/``adapter``/
    ``quantization`` filled; otherwise :func:`load_model` records one with ``format=name``).
    """
    _ARTIFACTS[name] = Artifact(name, detect, load)


def unregister_artifact(name: str) -> None:
    """Forget an artifact kind (no error when it was not registered)."""
    _ARTIFACTS.pop(name, None)


def registered_artifacts() -> list[str]:
    """Names of the registered artifact kinds, in the order they are tried."""
    return list(_ARTIFACTS)


def _detect_artifact(path: Path) -> Artifact | None:
    for artifact in _ARTIFACTS.values():
        if artifact.detect(path):
            return artifact
    return None


@dataclass(frozen=True)
class ResolvedSource:
    """A model source turned into one local weights file, or a folder a registered artifact claims."""

    source: str
    kind: str
    path: Path
    repo: str | None = None
    revision: str | None = None
    artifact: str | None = None


# ---------------------------------------------------------------- sources


def _pick_in_folder(folder: Path) -> Path:
    for name in LOCAL_FILENAMES:
        if (folder / name).is_file():
            return folder / name
    candidates = sorted(p for p in folder.iterdir() if p.is_file() and is_supported(p))
    if len(candidates) == 1:
        return candidates[0]
    listing = ", ".join(p.name for p in sorted(folder.iterdir())[:10]) or "nothing"
    if candidates:
        raise InputError(
            f"{folder} holds several checkpoints ({', '.join(p.name for p in candidates)})",
            "pass the file itself with --model FILE",
        )
    raise InputError(
        f"no weights file in {folder} (looked for {', '.join(LOCAL_FILENAMES)}; found {listing})",
        "pass a .safetensors/.pt file, or fetch weights with `vggtctl download weights --local-dir DIR`",
    )


def resolve_source(
    source: str | os.PathLike[str] = DEFAULT_REPO,
    revision: str | None = None,
    *,
    progress: Progress = NULL_PROGRESS,
) -> ResolvedSource:
    """Turn a model source into one local weights file (downloading Hub weights if needed).

    Args:
        source: Hub repo id, local file or folder, or ``"tiny"``.
        revision: Hub revision (branch, tag or commit); only valid for Hub sources.
        progress: Receives download and hashing progress.

    Returns:
        The :class:`ResolvedSource`.

    Raises:
        InputError: A local path that does not exist or holds no weights.
        UsageError: ``--revision`` with a local source, or a source that is neither a path nor a repo id.
        DownloadError: Any Hub failure (see :func:`vggtctl.services.hub.fetch_weights`).
    """
    src = os.fspath(source)
    if src == TINY_SOURCE:
        if revision:
            raise UsageError(
                f"revision {revision!r} applies to Hub repos, not to the generated tiny checkpoint",
                "drop the revision",
            )
        return ResolvedSource(src, "tiny", tiny_checkpoint_path())
    path = Path(src).expanduser()
    if path.exists():
        if revision:
            raise UsageError(
                f"revision {revision!r} applies to Hub repos, but {src} is a local path",
                f"drop the revision, or pass a repo id like {DEFAULT_REPO}",
            )
        artifact = _detect_artifact(path)
        if artifact is None and path.is_dir():
            path = _pick_in_folder(path)
            artifact = _detect_artifact(path)
        if artifact is None and not is_supported(path):
            raise InputError(
                f"unsupported weights file {path} (suffix {path.suffix or 'none'!r})",
                f"use one of: {', '.join(supported_suffixes())}",
            )
        return ResolvedSource(src, "file", path.resolve(), artifact=artifact.name if artifact else None)
    if looks_like_repo_id(src) and not src.startswith((".", "/", "~")):
        weights = fetch_weights(src, revision, progress=progress)
        artifact = _detect_artifact(weights.path)
        return ResolvedSource(
            src,
            "hub",
            weights.path,
            repo=src,
            revision=weights.commit or revision,
            artifact=artifact.name if artifact else None,
        )
    if any(sep in src for sep in ("/", os.sep)) or is_supported(Path(src)):
        raise InputError(f"model file not found: {src}", "check the path, or pass a Hub repo id or 'tiny'")
    raise UsageError(
        f"model source {src!r} is neither a file, a folder, a Hub repo id (owner/name) nor 'tiny'",
        f"e.g. {DEFAULT_REPO}, ./weights/model.safetensors or tiny",
    )


# ---------------------------------------------------------------- state dict -> model


def read_state_dict(
    path: str | os.PathLike[str], dtype: torch.dtype | None = None
) -> tuple[dict[str, torch.Tensor], str]:
    """Read a weights file into a flat state dict for a VGGT loaded as ``dtype``.

    Args:
        path: A file with a registered suffix.
        dtype: The model dtype. For bf16/fp16 a safetensors file is converted while it is read
            (peak ~ the converted model, not the float32 file plus the model), with each key's
            dtype decided after its ``module.``/``_orig_mod.``/``model.`` prefix is stripped.

    Returns:
        ``(state_dict, format)``.
    """
    import torch

    if dtype in (torch.bfloat16, torch.float16):
        from vggtctl.models.vggt.build import target_dtype

        return _read_file(path, lambda key: target_dtype(key, dtype))  # type: ignore[arg-type]
    return _read_file(path)


def _preset_name(config: VGGTConfig) -> str:
    from vggtctl.models.vggt.config import preset_name

    return preset_name(config) or "custom"


def build_config(state_dict: Mapping[str, Any], preset: str | None) -> VGGTConfig:
    """The config to build: the given preset with the heads the checkpoint has, or the inferred one."""
    from vggtctl.models.vggt.build import infer_config
    from vggtctl.models.vggt.config import get_config

    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    if preset is None:
        return infer_config(shapes)
    config = get_config(preset)
    # A checkpoint without e.g. the track head is still this preset; match its heads.
    head_prefix = {
        "camera": "camera_head.",
        "depth": "depth_head.",
        "point": "point_head.",
        "track": "track_head.",
    }
    switches = {}
    for head, prefix in head_prefix.items():
        flag = f"enable_{head}"
        if hasattr(config, flag):
            switches[flag] = any(k.startswith(prefix) for k in shapes)
    return replace(config, **switches) if switches else config


def model_from_state_dict(
    state_dict: Mapping[str, Any],
    preset: str | None = None,
    *,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
) -> VGGT:
    """Build a VGGT from a state dict: preset given (heads matched to the checkpoint) or inferred.

    Raises:
        CheckpointError: Keys or shapes do not fit; the grouped report names the preset the
            checkpoint does look like.
        UsageError: Unknown preset.
    """
    from vggtctl.models.vggt.build import from_state_dict

    return from_state_dict(build_config(state_dict, preset), state_dict, device=device, dtype=dtype)


def load_model(
    source: str | os.PathLike[str] = DEFAULT_REPO,
    preset: str | None = None,
    device: str = "cpu",
    dtype: torch.dtype | str | None = None,
    revision: str | None = None,
    *,
    progress: Progress = NULL_PROGRESS,
) -> VGGT:
    """Load a VGGT model in eval mode from the Hub, a local file/folder or the seeded tiny weights.

    Args:
        source: Hub repo id (default ``facebook/VGGT-1B``), local ``.safetensors``/``.pt``/``.pth`` or a
            folder holding one, ``"tiny"``, or ``"seeded:vggt-1b"`` / ``"seeded:tiny"`` (random weights
            of that preset drawn on ``device`` from seed 0, no file: for timing and memory only).
        preset: ``"vggt-1b"`` or ``"tiny"``; inferred from the checkpoint when ``None``.
        device: Torch device for the weights (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        dtype: Weight dtype (``None`` keeps the checkpoint's, float32 for VGGT-1B); a torch dtype or
            ``"fp32"``/``"bf16"``/``"fp16"``.
        revision: Hub branch, tag or commit (Hub sources only).
        progress: Receives download and hashing progress and stage messages.

    Returns:
        The model in eval mode; its :class:`Provenance` is ``model.provenance`` (or
        ``provenance_of(wrapped)`` once wrapped for training).

    Raises:
        CheckpointError: Unsafe, truncated or mismatched checkpoints (grouped key report).
        DownloadError: Hub failures, offline without cache.
        InputError: Missing local files.
        UsageError: Unknown preset, bad source or revision use.
    """
    t0 = time.perf_counter()
    torch_dtype = parse_dtype(dtype)
    if seeded_preset(source) is not None:
        return _seeded(os.fspath(source), preset, device, torch_dtype, revision)
    resolved = resolve_source(source, revision, progress=progress)
    artifact = _ARTIFACTS.get(resolved.artifact) if resolved.artifact else None
    if artifact is not None:
        model = artifact.load(resolved, preset=preset, device=device, dtype=torch_dtype, progress=progress)
        fmt = artifact.name
    else:
        state_dict, fmt = read_state_dict(resolved.path, torch_dtype)
        model = model_from_state_dict(state_dict, preset, device=device, dtype=torch_dtype)
        del state_dict
    if provenance_of(model) is None:
        config = model.config
        set_provenance(
            model,
            Provenance(
                source=resolved.source,
                kind=resolved.kind,
                path=str(resolved.path),
                repo=resolved.repo,
                revision=resolved.revision,
                sha256=path_sha256(resolved.path, progress),
                preset=_preset_name(config),
                format=fmt,
                heads=tuple(config.heads),
            ),
        )
    model.eval()
    log.info("loaded %s (%s) in %.2fs", resolved.path, fmt, time.perf_counter() - t0)
    return model


def _seeded(
    source: str, preset: str | None, device: str, dtype: torch.dtype | None, revision: str | None
) -> VGGT:
    """``seeded:PRESET``: random weights of the preset's architecture drawn on ``device`` from seed 0."""
    import hashlib

    import torch

    from vggtctl.models.vggt.build import seeded_model
    from vggtctl.models.vggt.config import PRESETS, get_config

    name = seeded_preset(source)
    if name not in PRESETS or (preset is not None and preset != name):
        raise UsageError(f"model source {source!r} names no preset{f' (or not {preset!r})' if preset else ''}",
                         f"use one of: {', '.join(SEEDED_PREFIX + p for p in PRESETS)}")  # fmt: skip
    if revision:
        raise UsageError(f"revision {revision!r} applies to Hub repos, not to {source}", "drop the revision")
    model = seeded_model(get_config(name), device=device, dtype=dtype)
    where = torch.device(device).type
    # No file to hash: the recipe's hash stands for the weights (cache keys stay apart from real ones).
    recipe = hashlib.sha256(f"{source} seed 0 on {where}, torch {torch.__version__}".encode()).hexdigest()
    config = model.config
    set_provenance(model, Provenance(source=source, kind="seeded", path="", repo=None, revision=None, sha256=recipe,
                                     preset=name, format="seeded", heads=tuple(config.heads)))  # fmt: skip
    return model.eval()


_DTYPE_NAMES = {
    "fp32": "float32",
    "float32": "float32",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
}


def parse_dtype(dtype: Any) -> torch.dtype | None:
    """``None``/``"auto"`` -> None; ``"fp32"``/``"bf16"``/``"fp16"`` (or a torch dtype) -> torch dtype."""
    if dtype is None or dtype == "auto":
        return None
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    name = _DTYPE_NAMES.get(str(dtype).lower())
    if name is None:
        raise UsageError(f"unknown dtype {dtype!r}", "use auto, fp32, bf16 or fp16")
    return getattr(torch, name)


# ---------------------------------------------------------------- built-in artifact kinds
# Registered here, where every load_model call sees them: LoRA adapters and finetune run directories.
from vggtctl.services.finetune.adapter import register as _register_lora_adapter  # noqa: E402

_register_lora_adapter()


def _register_builtin_artifacts() -> None:
    # Quantized artifact folders load through load_model everywhere (infer, evaluate, cache build).
    # The module imports no torch; its loader imports torchao only when an artifact is loaded.
    from vggtctl.services.quantize.artifact import register

    register()


_register_builtin_artifacts()
