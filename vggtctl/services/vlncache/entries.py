"""An entry's bytes (safetensors: ``features`` [P, C] + ``grid`` [2]) and the frame hashes behind keys."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vggtctl.errors import InputError
from vggtctl.utils.hashing import sha256_file

from .layout import FEATURES, GRID
from .spec import BYTES_PER_VALUE

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

_SAFETENSORS_DTYPES = {"bf16": "BF16", "fp16": "F16", "fp32": "F32"}
_hashes: dict[tuple[str, int, int], str] = {}


def frame_sha256(path: Path) -> str:
    """sha256 of a frame file's bytes, remembered per process while its size and mtime stay."""
    st = path.stat()
    memo = (str(path), st.st_size, st.st_mtime_ns)
    hit = _hashes.get(memo)
    if hit is None:
        hit = _hashes[memo] = sha256_file(path)
    return hit


def missing_frames(frames: Sequence[Path]) -> list[Path]:
    """The frames that are not readable files."""
    return [p for p in frames if not (p.is_file() and os.access(p, os.R_OK))]


def encode_entry(features: Tensor, grid: tuple[int, int], key: str) -> bytes:
    """The safetensors bytes of one value (one metadata key, so the layout never varies)."""
    import torch
    from safetensors.torch import save

    meta = json.dumps({"key": key}, sort_keys=True)
    return save({FEATURES: features, GRID: torch.tensor(grid, dtype=torch.int64)}, metadata={"vggtctl": meta})


def decode_entry(path: Path) -> tuple[Tensor, tuple[int, int]]:
    """``(features, grid)`` of an entry file."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    grid = tensors[GRID].tolist()
    return tensors[FEATURES], (int(grid[0]), int(grid[1]))


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, checked for a sane length.

    Raises:
        InputError: Shorter than its header claims, or the header is not JSON.
    """
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise InputError(f"{path}: shorter than a safetensors header", "rebuild the entry")
        (n,) = struct.unpack("<Q", head)
        size = path.stat().st_size
        if n > size - 8 or n > 100_000_000:
            raise InputError(
                f"{path}: header length {n} exceeds the file ({size} bytes)", "rebuild the entry"
            )
        try:
            return json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError(f"{path}: the safetensors header is not JSON", "rebuild the entry") from None


def entry_bytes(patches: int, channels: int, dtype: str) -> int:
    """Approximate size of one entry: the values plus ~200 bytes of header and grid."""
    return patches * channels * BYTES_PER_VALUE[dtype] + 200


def safetensors_dtype(dtype: str) -> str:
    return _SAFETENSORS_DTYPES[dtype]
