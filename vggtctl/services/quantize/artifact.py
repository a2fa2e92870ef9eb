"""The quantized artifact on disk: ``model.safetensors`` + ``quantization.json`` (+ ``report.json``).

``model.safetensors`` holds only tensors (int8 weights, float scales, the float layers): torchao's
int8 tensors are flattened into their parts with ``torchao.prototype.safetensors`` (their type
recorded in the file's metadata); vggtctl's own int8 modules already are plain tensors. No pickle
anywhere. ``quantization.json`` is written last (the folder's completeness marker) and says
everything needed to rebuild the model: the base model's config and provenance, each layer's scheme.

:func:`load_artifact` builds the model on the meta device, gives it the artifact's structure and
assigns the file's tensors: no float model, no calibration.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vggtctl.errors import CheckpointError, UsageError
from vggtctl.progress import NULL_PROGRESS, Progress

from .config import FORMAT_VERSION

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from vggtctl.models.vggt.model import VGGT
    from vggtctl.services.model_loader import ResolvedSource

log = logging.getLogger(__name__)

ARTIFACT_KIND = "quantized"
MANIFEST = "quantization.json"
WEIGHTS = "model.safetensors"
REPORT = "report.json"


def is_artifact(path: Path) -> bool:
    """A folder holding ``quantization.json`` (written last, so only a whole artifact)."""
    return path.is_dir() and (path / MANIFEST).is_file()


def config_sha256(manifest: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of the quantization settings (method, observer, rotation, layers)."""
    keys = ("format_version", "method", "observer", "rotation", "bits", "layers", "calibration")
    canon = json.dumps({k: manifest.get(k) for k in keys}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def read_manifest(folder: Path) -> dict[str, Any]:
    """The artifact's ``quantization.json``, checked for a format this vggtctl reads.

    Raises:
        CheckpointError: Unreadable, or written by a newer vggtctl (format version above ours).
    """
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(
            f"cannot read {path}: {e}", "re-create the artifact with `vggtctl quantize`"
        ) from None
    version = manifest.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path} has no valid format_version ({version!r})", "re-create the artifact")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{folder} is a quantized artifact of format version {version}; this vggtctl reads up to "
            f"version {FORMAT_VERSION}",
            "upgrade vggtctl (pip install -U vggtctl), or re-quantize with this version",
        )
    return manifest


def save_weights(model: Any, path: Path) -> dict[str, int]:
    """Write the quantized model's state dict to ``path`` (safetensors, no pickle).

    Returns:
        ``{"file_bytes", "tensor_bytes"}``.
    """
    from safetensors.torch import save_file
    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

    from .apply import tensor_bytes
    from .torchao_import import quiet_torchao

    with quiet_torchao():
        tensors, metadata = flatten_tensor_state_dict(model.state_dict())
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, str(path), metadata=metadata)
    return {"file_bytes": path.stat().st_size, "tensor_bytes": tensor_bytes(tensors)}


def _config_from(manifest: Mapping[str, Any]) -> Any:
    from vggtctl.models.vggt.config import VGGTConfig

    known = {f.name for f in fields(VGGTConfig)}
    values = {k: v for k, v in manifest["model_config"].items() if k in known}
    return VGGTConfig(**values)


def build_quantized(folder: Path, device: str = "cpu") -> VGGT:
    """Rebuild the quantized VGGT of an artifact folder (meta device, then assign the file's tensors).

    Raises:
        CheckpointError: A newer format, a missing/damaged weights file, keys that do not fit.
    """
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        from .torchao_import import import_torchao

        import_torchao()
        from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict
    except ImportError:
        raise UsageError(
            f"{folder} is a quantized artifact and loading it needs torchao, which is not installed",
            "pip install 'vggtctl[quantize]' (torchao 0.18)",
        ) from None

    from vggtctl.models.vggt.build import build_empty

    from .apply import structure_on_meta

    manifest = read_manifest(folder)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{folder} has {MANIFEST} but no {WEIGHTS}", "re-create the artifact")
    config = replace(_config_from(manifest), gradient_checkpointing=False)
    model = build_empty(config)
    structure_on_meta(model, manifest["layers"])
    try:
        with safe_open(str(weights), "pt") as f:
            metadata = f.metadata() or {}
        flat = load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise CheckpointError(
            f"cannot read {weights}: {e}", "re-create the artifact with `vggtctl quantize`"
        ) from None
    from .torchao_import import quiet_torchao

    with quiet_torchao():
        state = unflatten_tensor_state_dict(flat, metadata)
    if isinstance(state, tuple):
        state = state[0]
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"{weights} does not fit its {MANIFEST}: {str(e).splitlines()[0]}", "re-create the artifact"
        ) from None
    model.aggregator.reset_buffers(torch.device("cpu"))
    if device != "cpu":
        model = model.to(device)
        model.aggregator.reset_buffers(torch.device(device))
    return model.eval()


def _load(
    resolved: ResolvedSource,
    preset: str | None = None,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    progress: Progress = NULL_PROGRESS,
) -> VGGT:
    import torch

    from vggtctl.services.hashing import folder_sha256
    from vggtctl.services.provenance import Provenance, QuantizationInfo, set_provenance

    if dtype not in (None, torch.float32):
        # int8 weights are not converted; `auto` resolves to bf16 on some CPUs, so this is not an error.
        log.info("%s is a quantized artifact: its weights stay as stored (not %s)", resolved.path, dtype)
    folder = Path(resolved.path)
    manifest = read_manifest(folder)
    if preset is not None and manifest.get("base", {}).get("preset") not in (None, preset):
        raise UsageError(
            f"{folder} quantizes a {manifest['base']['preset']!r} model, not {preset!r}",
            "drop the preset for a quantized artifact",
        )
    progress.log(f"loading quantized artifact {folder} ({manifest.get('method')})")
    model = build_quantized(folder, device)
    base = manifest.get("base") or {}
    base_prov = Provenance(
        source=str(base.get("source", "")),
        kind=str(base.get("kind", "")),
        path=str(base.get("path", "")),
        repo=base.get("repo"),
        revision=base.get("revision"),
        sha256=str(base.get("sha256", "")),
        preset=str(base.get("preset", "")),
        format=str(base.get("format", "")),
        heads=tuple(base.get("heads", ())),
    )
    set_provenance(
        model,
        Provenance(
            source=resolved.source,
            kind=resolved.kind,
            path=str(folder),
            repo=resolved.repo,
            revision=resolved.revision,
            sha256=folder_sha256(folder, progress),
            preset=base_prov.preset,
            format=ARTIFACT_KIND,
            heads=tuple(model.config.heads),
            base=base_prov,
            quantization=QuantizationInfo(str(manifest.get("method")), config_sha256(manifest)),
        ),
    )
    return model


def register() -> None:
    """Make ``load_model(DIR)`` (and so ``infer``/``evaluate``/``cache build --model DIR``) read artifacts."""
    from vggtctl.services.model_loader import register_artifact

    register_artifact(ARTIFACT_KIND, is_artifact, _load)
