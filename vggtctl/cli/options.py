"""Option value sets shared by several commands (one definition, so help texts agree)."""

from __future__ import annotations

from enum import Enum


class Mode(str, Enum):
    """Preprocessing: ``crop`` = width to the model size, centre-crop; ``pad`` = white square."""

    crop = "crop"
    pad = "pad"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Dtype(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Points(str, Enum):
    """Where the point cloud comes from: depth + cameras (more accurate) or the point head."""

    depth = "depth"
    head = "head"
