"""The options of ``vggtctl quantize``: one dataclass, its defaults and its validation (no torch)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vggtctl.errors import Problem, raise_problems

TYPES = ("dynamic", "static", "weight-only")
OBSERVERS = ("minmax", "histogram", "per_channel")
ROTATIONS = ("none", "hadamard")
BITS = (8, 4)
# The weights' number format: int (8 or 4 bits) or fp8 (float8 e4m3, 8 bits, through torchao).
WEIGHT_DTYPES = ("int", "fp8")
# Formats this vggtctl reads; an artifact written by a newer one is refused, not misread.
# 1: int8/int4 layers. 2: fp8 layers too (torchao Float8Tensor parts); int artifacts are still
# written as 1 (their layout is unchanged), so older vggtctl versions keep reading them.
FORMAT_VERSION = 2
INT_FORMAT_VERSION = 1


@dataclass
class QuantizeConfig:
    """What to quantize and how.

    Attributes:
        model: Source model (Hub id, local file/folder, ``tiny``); never an already quantized artifact.
        out: Artifact folder (``model.safetensors``, ``quantization.json``, ``report.json``).
        type: ``dynamic`` (int8 weights, per-token int8 activations on the fly), ``static`` (int8
            weights and calibrated per-tensor activation scales) or ``weight-only``.
        observer: Static only: ``minmax``, ``histogram`` (L2-minimising range search) or
            ``per_channel`` (per-channel weights, min/max per-tensor activations); None -> minmax.
        calibration_data: ETH3D root or any folder of images (static; also the compare frames' source).
        calibration_samples: Scenes (image folders) used for calibration.
        calibration_frames: Frames per scene.
        quantize_attention: Also quantize attention qkv/proj (the MLPs always are).
        quantize_heads: Also quantize the camera trunk, DPT/track convolutions and head Linears.
        quantize_patch_embed: Also quantize the DINOv2 patch-embed blocks' Linears (24 % of VGGT-1B).
        rotate: ``none`` or ``hadamard`` (rotation folded into the aggregator blocks' Linears).
        bits: 8, or 4 (weight-only on CUDA).
        weight_dtype: ``int`` or ``fp8`` (float8 e4m3 weights: ``weight-only`` on CPU and CUDA,
            ``dynamic`` with fp8 activations on CUDA compute capability >= 8.9 only).
        device: Where to quantize and compare: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        compare: Write the float-vs-quantized comparison into ``report.json``.
        eval_data: ETH3D-layout root with ground truth for the comparison's metrics.
        compare_frames: Frames of the held-out comparison scene.
        repeats: Forward passes timed per model (the median is reported).
        seed: Seed of the calibration/held-out scene choice.
        overwrite: Replace an existing artifact at ``out``.
        preset: Model preset (inferred when None).
        revision: Hub revision of ``model``.
    """

    model: str = "facebook/VGGT-1B"
    out: Path = Path("vggt_quantized")
    type: str = "dynamic"
    observer: str | None = None
    calibration_data: Path | None = None
    calibration_samples: int = 4
    calibration_frames: int = 4
    quantize_attention: bool = True
    quantize_heads: bool = False
    quantize_patch_embed: bool = True
    rotate: str = "none"
    bits: int = 8
    weight_dtype: str = "int"
    device: str = "auto"
    compare: bool = True
    eval_data: Path | None = None
    compare_frames: int = 4
    repeats: int = 3
    seed: int = 0
    overwrite: bool = False
    preset: str | None = None
    revision: str | None = None

    @property
    def effective_observer(self) -> str | None:
        """The observer a static run uses (``minmax`` when none was named); None for other types."""
        return (self.observer or "minmax") if self.type == "static" else None

    def problems(self) -> list[Problem]:
        """Every bad setting, all at once."""
        p: list[Problem] = []
        if self.type not in TYPES:
            p.append(Problem.of("type", f"one of {', '.join(TYPES)}", self.type))
        if self.observer is not None and self.observer not in OBSERVERS:
            p.append(Problem.of("observer", f"one of {', '.join(OBSERVERS)}", self.observer))
        elif self.observer is not None and self.type != "static":
            p.append(
                Problem.of(
                    ("type", "observer"),
                    "an observer calibrates static activation scales; "
                    f"{self.type} quantization has no observer (drop {{observer}} or use {{type}} static)",
                    refs=("observer", "type"),
                )
            )
        if self.rotate not in ROTATIONS:
            p.append(Problem.of("rotate", f"one of {', '.join(ROTATIONS)}", self.rotate))
        if self.bits not in BITS:
            p.append(Problem.of("bits", "8 or 4", self.bits))
        elif self.bits == 4 and self.type != "weight-only":
            p.append(
                Problem.of(
                    ("bits", "type"),
                    "4-bit is weight-only (torchao int4 kernels); activations stay 8-bit or float",
                    refs=("type",),
                )
            )
        if self.weight_dtype not in WEIGHT_DTYPES:
            p.append(Problem.of("weight_dtype", f"one of {', '.join(WEIGHT_DTYPES)}", self.weight_dtype))
        elif self.weight_dtype == "fp8" and (self.type == "static" or self.bits != 8):
            p.append(
                Problem.of(
                    ("weight_dtype", "type"),
                    "fp8 is 8-bit weight-only or dynamic (torchao's float8 configs); static and --bits 4 "
                    "are int",
                    refs=("type",),
                )
            )
        if self.calibration_samples < 1:
            p.append(Problem.of("calibration_samples", "at least 1 scene", self.calibration_samples))
        if self.calibration_frames < 1:
            p.append(Problem.of("calibration_frames", "at least 1 frame", self.calibration_frames))
        if self.compare_frames < 1:
            p.append(Problem.of("compare_frames", "at least 1 frame", self.compare_frames))
        if self.repeats < 1:
            p.append(Problem.of("repeats", "at least 1", self.repeats))
        if self.type == "static" and self.calibration_data is None:
            p.append(
                Problem.of(
                    "calibration_data",
                    "static quantization calibrates activation ranges on real images: pass a folder",
                )
            )
        for name in ("calibration_data", "eval_data"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_dir():
                p.append(Problem.of(name, "not a folder", os.fspath(value)))
        return p

    def validate(self) -> None:
        """Raise one :class:`~vggtctl.errors.ConfigError` naming every bad setting."""
        raise_problems(
            "quantize settings",
            self.problems(),
            "e.g. vggtctl quantize --model tiny --type static --observer histogram "
            "--calibration-data demo_data --out tiny_int8",
        )
