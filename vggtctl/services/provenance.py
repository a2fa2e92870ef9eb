"""Where a loaded model came from, as a declared part of the model that survives wrapping.

:func:`~vggtctl.services.model_loader.load_model` sets the ``provenance`` attribute that
:class:`~vggtctl.models.vggt.model.VGGT` declares. Training wraps the model (DDP keeps it as
``.module``, ``torch.compile`` as ``._orig_mod``, PEFT as ``.base_model.model``), and a wrapper does
not forward plain attributes, so code that may hold a wrapped model asks :func:`provenance_of`.

Fields for what comes next are declared now (a LoRA run records its base model and adapter, a
quantized artifact its method and config hash) so ``meta.json`` keeps one shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Attribute names under which wrappers keep the model they wrap, in the order they are tried:
# DistributedDataParallel / DataParallel, torch.compile's OptimizedModule, PEFT's PeftModel and LoraModel.
WRAPPED_ATTRS = ("module", "_orig_mod", "base_model", "model")


@dataclass(frozen=True)
class AdapterInfo:
    """An adapter applied on top of the base weights (e.g. a LoRA run directory)."""

    path: str
    sha256: str
    method: str = "lora"


@dataclass(frozen=True)
class QuantizationInfo:
    """How the weights were quantized: the method and the sha256 of its (canonical JSON) config."""

    method: str
    config_sha256: str


@dataclass(frozen=True)
class Provenance:
    """Where a loaded model came from; commands write it into ``meta.json``.

    Attributes:
        source: What the caller passed (repo id, path or ``"tiny"``).
        kind: ``"hub"``, ``"file"`` (a local file or folder), ``"tiny"`` or ``"seeded"`` (random weights, no file).
        path: The local weights file (or artifact folder) that was read.
        repo: Hub repo id (Hub sources only).
        revision: Resolved commit hash for Hub sources (or the requested revision when unknown).
        sha256: SHA-256 of the weights file; for a folder, of its file manifest
            (see :func:`vggtctl.services.hashing.folder_sha256`).
        preset: Model preset (``"vggt-1b"``, ``"tiny"``), given or inferred.
        format: ``"safetensors"``, ``"pt"`` or the name of the registered artifact kind.
        heads: Heads present in the checkpoint.
        base: The base model's provenance when this model is built on one (adapter, quantization).
        adapter: The adapter applied, if any.
        quantization: The quantization applied, if any.
    """

    source: str
    kind: str
    path: str
    repo: str | None
    revision: str | None
    sha256: str
    preset: str
    format: str
    heads: tuple[str, ...] = ()
    base: Provenance | None = None
    adapter: AdapterInfo | None = None
    quantization: QuantizationInfo | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        d = asdict(self)
        d["heads"] = list(self.heads)
        if self.base is not None:
            d["base"] = self.base.to_dict()
        return d


def provenance_of(model: Any) -> Provenance | None:
    """The provenance of a loaded model, looking through DDP, torch.compile and PEFT wrappers.

    Args:
        model: A model from ``load_model``, or a wrapper around one.

    Returns:
        The :class:`Provenance`, or ``None`` for a model that did not come from the loader.
    """
    seen: set[int] = set()
    todo = [model]
    while todo:
        m = todo.pop(0)
        if m is None or id(m) in seen:
            continue
        seen.add(id(m))
        attrs = getattr(m, "__dict__", {})
        if isinstance(attrs.get("provenance"), Provenance):
            return attrs["provenance"]
        # nn.Module keeps submodules in _modules; torch.compile keeps _orig_mod as a submodule too.
        children = getattr(m, "_modules", None) or {}
        todo.extend(children[a] for a in WRAPPED_ATTRS if a in children)
        todo.extend(attrs[a] for a in WRAPPED_ATTRS if a in attrs)
    return None


def set_provenance(model: Any, provenance: Provenance) -> None:
    """Record ``provenance`` on the (unwrapped) model: a plain attribute, not a buffer or parameter."""
    object.__setattr__(model, "provenance", provenance)
