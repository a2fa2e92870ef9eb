"""Turn a float VGGT into its quantized form, and build that form again on the meta device.

Per layer (see :mod:`.selection`) one *scheme*:
- ``int8-dynamic``: torchao ``Int8DynamicActivationInt8WeightConfig`` (per-channel symmetric int8
  weights, per-token symmetric int8 activations computed on the fly).
- ``int8-weight``: torchao ``Int8WeightOnlyConfig`` (Linear) or :class:`~.modules.Int8Conv` (conv).
- ``int4-weight``: torchao ``Int4WeightOnlyConfig`` (group size 128; CUDA only).
- ``int8-static``: :class:`~.modules.StaticInt8Linear` with the calibrated activation scale.
- ``fp8-weight``: torchao ``Float8WeightOnlyConfig`` (float8 e4m3 weights, per-row scale, dequantised
  per call; runs on CPU too). ``fp8-dynamic``: ``Float8DynamicActivationFloat8WeightConfig`` (CUDA,
  compute capability >= 8.9). Convolutions stay int8 weight-only (torchao quantizes Linears only).

The same plan applied to a meta-device model gives the exact module structure of the artifact, so
its state dict loads with ``assign=True`` and nothing float is ever materialised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .hadamard import rotated
from .modules import Int8Conv, StaticInt8Linear

TORCHAO_SCHEMES = ("int8-dynamic", "int8-weight", "int4-weight", "fp8-weight", "fp8-dynamic")
FP8_SCHEMES = ("fp8-weight", "fp8-dynamic")


def scheme_for(op: str, qtype: str, bits: int, calibrated: bool, weight_dtype: str = "int") -> str:
    """The scheme of one layer for a quantization type."""
    if op == "conv":
        return "int8-weight"
    if weight_dtype == "fp8":
        return "fp8-dynamic" if qtype == "dynamic" else "fp8-weight"
    if qtype == "dynamic":
        return "int8-dynamic"
    if qtype == "static":
        # A layer the calibration never reached (e.g. the tracker without query points) keeps int8
        # weights and float activations rather than an invented range.
        return "int8-static" if calibrated else "int8-weight"
    return "int4-weight" if bits == 4 else "int8-weight"


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def rotate_layers(model: nn.Module, names: Sequence[str]) -> None:
    """Fold the Hadamard rotation into these Linears (float outputs unchanged)."""
    for name in names:
        _set(model, name, rotated(model.get_submodule(name)))  # type: ignore[arg-type]


def _torchao_config(scheme: str) -> Any:
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Float8WeightOnlyConfig,
        Int4WeightOnlyConfig,
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
    )

    if scheme == "fp8-weight":
        return Float8WeightOnlyConfig()
    if scheme == "fp8-dynamic":
        return Float8DynamicActivationFloat8WeightConfig()
    if scheme == "int8-dynamic":
        return Int8DynamicActivationInt8WeightConfig()
    if scheme == "int4-weight":
        return Int4WeightOnlyConfig(group_size=128)
    return Int8WeightOnlyConfig()


def apply_schemes(
    model: nn.Module,
    layers: Sequence[Mapping[str, Any]],
    act_scales: Mapping[str, float] | None = None,
    per_tensor_weight: bool = False,
) -> None:
    """Replace/quantize every listed layer in place (``layers``: dicts with name, op, scheme, rotate).

    On the meta device this only builds the structure: torchao layers stay ``nn.Linear`` (their int8
    tensors arrive with ``load_state_dict(assign=True)``), own modules are created empty.
    """
    meta = next(model.parameters()).is_meta
    by_scheme: dict[str, set[str]] = {}
    for layer in layers:
        name, scheme = layer["name"], layer["scheme"]
        module = model.get_submodule(name)
        if scheme == "int8-static":
            scale = (act_scales or {}).get(name, 1.0)
            _set(
                model,
                name,
                StaticInt8Linear(
                    module,  # type: ignore[arg-type]
                    scale,
                    per_tensor_weight=bool(layer.get("per_tensor_weight", per_tensor_weight)),
                    rotate=bool(layer.get("rotate")),
                ),
            )
        elif layer["op"] == "conv":
            _set(model, name, Int8Conv(module))  # type: ignore[arg-type]
        else:
            by_scheme.setdefault(scheme, set()).add(name)
    if meta:
        return
    from torchao.quantization import quantize_

    from .torchao_import import quiet_torchao

    with quiet_torchao():
        for scheme, names in by_scheme.items():
            quantize_(model, _torchao_config(scheme), filter_fn=lambda _m, fqn, names=names: fqn in names)


def structure_on_meta(model: nn.Module, layers: Sequence[Mapping[str, Any]]) -> None:
    """Give a meta-device VGGT the module structure of a quantized artifact (rotations, own modules)."""
    rotate_layers(
        model, [layer["name"] for layer in layers if layer.get("rotate") and layer["op"] == "linear"]
    )
    apply_schemes(model, layers)


def tensor_bytes(state: Mapping[str, torch.Tensor]) -> int:
    """Bytes of the tensors of a (flattened) state dict."""
    return sum(int(t.numel()) * t.element_size() for t in state.values())
