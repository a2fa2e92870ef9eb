"""The seeded tiny VGGT: weights (and reference inputs) regenerated from a numpy-only recipe.

For every state-dict key K (1B names, tiny shapes) with seed 0:
``rng = Generator(PCG64([0, crc32(K)]))``, ``value = mean + std * rng.standard_normal(shape, float32)``
with (mean, std) by parameter kind (see :func:`init_stats`). The result is bit-identical to the
reference ``tiny/weights.safetensors`` (checked by hand against the reference data).
"""

from __future__ import annotations

import math
import os
import zlib
from pathlib import Path

import numpy as np

from vggtctl.utils.atomic import atomic_write_bytes

TINY_PRESET = "tiny"
TOKEN_PARAMS = frozenset(
    {
        "camera_token",
        "register_token",
        "cls_token",
        "register_tokens",
        "mask_token",
        "pos_embed",
        "empty_pose_tokens",
        "query_ref_token",
        "virual_tracks",
    }
)
# Inputs of the reference forward pass: 3 frames of 140×210 (not the 168² training grid) and 5 queries.
REFERENCE_INPUT = {"frames": 3, "height": 140, "width": 210, "queries": 5}


def init_stats(key: str, shape: tuple[int, ...]) -> tuple[float, float]:
    """(mean, std) of the normal the tiny recipe draws ``key`` from."""
    name = key.rsplit(".", 1)[-1]
    if key == "camera_head.pose_branch.fc2.bias":
        return 0.25, 0.02
    if key == "camera_head.pose_branch.fc2.weight":
        return 0.0, 0.1 / math.sqrt(shape[1])
    if name in TOKEN_PARAMS:
        return 0.0, 0.2
    if name == "gamma":
        return 0.1, 0.02
    if len(shape) == 1 and name == "weight":
        return 1.0, 0.1
    if len(shape) == 1 and name.endswith("bias"):
        return 0.0, 0.02
    if key.endswith(("resize_layers.0.weight", "resize_layers.1.weight")):
        return 0.0, 1.0 / math.sqrt(shape[0])
    return 0.0, 1.0 / math.sqrt(math.prod(shape[1:]))


def draw(key: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """The recipe's float32 value for one key."""
    rng = np.random.Generator(np.random.PCG64([seed, zlib.crc32(key.encode())]))
    mean, std = init_stats(key, shape)
    return (mean + std * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32, copy=False)


def tiny_state_dict() -> dict[str, np.ndarray]:
    """Every key of the tiny preset (all heads) in state-dict order, drawn by the seeded recipe."""
    from .build import expected_shapes
    from .config import get_config

    return {key: draw(key, shape) for key, shape in expected_shapes(get_config(TINY_PRESET))}


def write_tiny_checkpoint(path: str | os.PathLike[str]) -> Path:
    """Write the seeded tiny weights as safetensors, atomically (no network: they are generated).

    Args:
        path: Destination ``.safetensors`` file, or a folder (existing, or a name without suffix)
            to hold ``model.safetensors``.

    Returns:
        The file written.
    """
    from safetensors.numpy import save

    out = Path(path).expanduser()
    if out.is_dir() or out.suffix == "":
        out = out / "model.safetensors"
    # One metadata key: safetensors writes several in varying order, and the bytes must not vary.
    atomic_write_bytes(out, save(tiny_state_dict(), metadata={"format": "pt"}))
    return out


def reference_inputs(
    frames: int = 3, height: int = 140, width: int = 210, queries: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """The reference forward's inputs: images ``[S,3,H,W]`` in [0, 1) and queries ``[N,2]`` pixel (x, y)."""
    rng = np.random.Generator(np.random.PCG64([0, 1]))
    images = rng.random((frames, 3, height, width), dtype=np.float32)
    points = rng.random((queries, 2), dtype=np.float32) * np.array([width - 1, height - 1], dtype=np.float32)
    return images, points
