"""What a cached value depends on, and the content key derived from it.

Key = sha256 over (format version, VGGT weights sha256, layer spec, preprocessing spec, compute and
storage dtype, history mode, the ordered sha256 of each frame's file bytes). A path never enters a key:
renaming or moving a dataset keeps every entry valid, editing a frame invalidates exactly the samples
that contain it. No torch here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from vggtctl.errors import UsageError

#: Bump when the value's definition or the entry layout changes; readers refuse newer versions.
FORMAT_VERSION = 1
HISTORIES = ("streaming", "per-image")
STORAGE_DTYPES = ("bf16", "fp16", "fp32")
MODES = ("crop", "pad")
#: Relative tolerance of a recomputed value against the stored one, by storage dtype (a few ulps of the
#: largest value: bf16 keeps 8 significant bits, fp16 11, fp32 is compared at the model's own parity).
TOLERANCE = {"bf16": 2.0**-7, "fp16": 2.0**-10, "fp32": 1e-5}
BYTES_PER_VALUE = {"bf16": 2, "fp16": 2, "fp32": 4}


@dataclass(frozen=True)
class CacheSpec:
    """Everything besides the frames that determines a cached value.

    Attributes:
        weights_sha256: sha256 of the VGGT weights (``model.provenance.sha256``).
        preset: Model preset (``vggt-1b``, ``tiny``); informative, the sha256 decides.
        layer: Aggregator layer (22 = JanusVLN's ``aggregated_tokens[-2]``).
        tokens: Which tokens: ``patch`` (special tokens dropped), frame ‖ global concatenated.
        image_width: Target width (644 in JanusVLN, 518 in VGGT's own preprocessing).
        mode: ``crop`` (width := target, height rounded to 14, centre crop) or ``pad``.
        resample: ``bicubic`` (PIL, on uint8, then /255; ImageNet normalisation inside the model, once).
        compute_dtype: Dtype the model ran in (``fp32`` on CPU; the storage dtype on CUDA).
        dtype: Storage dtype of the values.
        history: ``streaming`` (causal over the sample's ordered frames, faithful) or ``per-image``
            (the current frame alone: a labelled approximation, VGGT without spatial memory).
        format_version: :data:`FORMAT_VERSION` at build time.
    """

    weights_sha256: str
    preset: str
    layer: int = 22
    tokens: str = "patch;frame+global"
    image_width: int = 644
    mode: str = "crop"
    resample: str = "bicubic"
    compute_dtype: str = "fp32"
    dtype: str = "bf16"
    history: str = "streaming"
    format_version: int = FORMAT_VERSION

    def problems(self) -> list[str]:
        """Every invalid field, worded for the user (empty when valid)."""
        out = []
        if self.history not in HISTORIES:
            out.append(f"history {self.history!r} (use {' or '.join(HISTORIES)})")
        if self.dtype not in STORAGE_DTYPES:
            out.append(f"dtype {self.dtype!r} (use {', '.join(STORAGE_DTYPES)})")
        if self.mode not in MODES:
            out.append(f"mode {self.mode!r} (use crop or pad)")
        if self.image_width < 14 or self.image_width % 14:
            out.append(f"image width {self.image_width} (a positive multiple of 14, e.g. 644 or 518)")
        return out

    def validate(self) -> CacheSpec:
        problems = self.problems()
        if problems:
            raise UsageError("bad cache spec: " + "; ".join(problems), "see `vggtctl cache build --help`")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CacheSpec:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def spec_id(self) -> str:
        """Short id of the spec (the first 16 hex digits of its sha256): groups entries in the manifest."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def differences(self, other: CacheSpec) -> list[str]:
        """``field: ours != theirs`` for every field that differs."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{k}: {theirs[k]!r} != {mine[k]!r}" for k in mine if mine[k] != theirs[k]]

    def key_frames(self, frame_hashes: Sequence[str]) -> tuple[str, ...]:
        """The frame hashes the value depends on: all of them in order, or only the current one."""
        if not frame_hashes:
            raise UsageError("a sample needs at least one frame", "check the data file's images lists")
        return tuple(frame_hashes) if self.history == "streaming" else (frame_hashes[-1],)

    def key(self, frame_hashes: Sequence[str]) -> str:
        """The entry key (64 hex digits) of a sample with these ordered frame hashes."""
        blob = json.dumps(
            {"spec": self.to_dict(), "frames": list(self.key_frames(frame_hashes))}, sort_keys=True
        )
        return hashlib.sha256(blob.encode()).hexdigest()
