"""A binary glTF (``.glb``) of a point cloud and camera frustums, for ``vggtctl app``'s 3-D view.

glTF 2.0 is a small format (a JSON chunk describing accessors into one binary chunk), so it is written
here directly rather than through a mesh library: two primitives, ``POINTS`` with ``COLOR_0`` and
``LINES`` for the frustums, no materials beyond vertex colours. Coordinates are converted from VGGT's
OpenCV world (x right, y down, z forward) to glTF's (y up, z towards the viewer) by flipping y and z.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vggtctl.utils.atomic import atomic_write_bytes

_FLOAT, _UBYTE, _UINT = 5126, 5121, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_POINTS, _LINES = 0, 1
OPENCV_TO_GLTF = np.diag([1.0, -1.0, -1.0])


def frustum_lines(
    extrinsics: np.ndarray, intrinsics: np.ndarray, hw: Sequence[tuple[int, int]], scale: float
) -> np.ndarray:
    """Line segments ``[S*8, 2, 3]`` (world, OpenCV axes) drawing each camera as a pyramid of depth ``scale``."""
    segs = []
    for E, K, (h, w) in zip(extrinsics, intrinsics, hw, strict=True):
        R, t = E[:, :3], E[:, 3]
        c = -R.T @ t
        corners_px = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
        rays = np.c_[
            (corners_px[:, 0] - K[0, 2]) / K[0, 0], (corners_px[:, 1] - K[1, 2]) / K[1, 1], np.ones(4)
        ]
        corners = c + (rays * scale) @ R  # camera -> world: R.T @ v for each row v
        for i in range(4):
            segs.append((c, corners[i]))
            segs.append((corners[i], corners[(i + 1) % 4]))
    return np.asarray(segs, dtype=np.float32).reshape(-1, 2, 3)


def _pad4(b: bytes, fill: bytes = b"\x00") -> bytes:
    return b + fill * (-len(b) % 4)


def glb_bytes(
    xyz: np.ndarray,
    rgb: np.ndarray,
    lines: np.ndarray | None = None,
    line_rgb: tuple[int, int, int] = (230, 90, 40),
) -> bytes:
    """The GLB file of points ``xyz [N,3]`` coloured ``rgb [N,3] uint8`` and segments ``lines [M,2,3]``."""
    buffers: list[bytes] = []
    views: list[dict[str, object]] = []
    accessors: list[dict[str, object]] = []
    offset = 0

    def add(arr: np.ndarray, component: int, kind: str, target: int, *, normalized: bool = False) -> int:
        nonlocal offset
        data = _pad4(np.ascontiguousarray(arr).tobytes())
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": arr.nbytes, "target": target})
        acc: dict[str, object] = {
            "bufferView": len(views) - 1,
            "componentType": component,
            "count": int(arr.shape[0]),
            "type": kind,
        }
        if normalized:
            acc["normalized"] = True
        if kind == "VEC3" and component == _FLOAT:
            acc["min"] = arr.min(axis=0).tolist() if len(arr) else [0.0, 0.0, 0.0]
            acc["max"] = arr.max(axis=0).tolist() if len(arr) else [0.0, 0.0, 0.0]
        accessors.append(acc)
        buffers.append(data)
        offset += len(data)
        return len(accessors) - 1

    def to_gltf(p: np.ndarray) -> np.ndarray:
        return (np.asarray(p, dtype=np.float32).reshape(-1, 3) @ OPENCV_TO_GLTF.astype(np.float32)).astype(
            np.float32
        )

    primitives = []
    xyz = to_gltf(xyz)
    if len(xyz):
        # COLOR_0 as normalised RGBA bytes: the smallest colour layout glTF allows for a vertex.
        rgba = np.concatenate(
            [np.asarray(rgb, np.uint8).reshape(-1, 3), np.full((len(xyz), 1), 255, np.uint8)], 1
        )
        pos = add(xyz, _FLOAT, "VEC3", _ARRAY_BUFFER)
        col = add(rgba, _UBYTE, "VEC4", _ARRAY_BUFFER, normalized=True)
        primitives.append({"attributes": {"POSITION": pos, "COLOR_0": col}, "mode": _POINTS})
    if lines is not None and len(lines):
        verts = to_gltf(np.asarray(lines).reshape(-1, 3))
        pos = add(verts, _FLOAT, "VEC3", _ARRAY_BUFFER)
        rgba = np.tile(np.array([*line_rgb, 255], np.uint8), (len(verts), 1))
        col = add(rgba, _UBYTE, "VEC4", _ARRAY_BUFFER, normalized=True)
        idx = add(np.arange(len(verts), dtype=np.uint32), _UINT, "SCALAR", _ELEMENT_ARRAY_BUFFER)
        primitives.append({"attributes": {"POSITION": pos, "COLOR_0": col}, "indices": idx, "mode": _LINES})
    binary = b"".join(buffers)
    doc = {
        "asset": {"version": "2.0", "generator": "vggtctl"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": "reconstruction"}] if primitives else [{"name": "empty"}],
        "buffers": [{"byteLength": len(binary)}],
        "bufferViews": views,
        "accessors": accessors,
    }
    if primitives:
        doc["meshes"] = [{"primitives": primitives, "name": "points and cameras"}]
    js = _pad4(json.dumps(doc, separators=(",", ":")).encode("utf-8"), b" ")
    chunks = struct.pack("<II", len(js), 0x4E4F534A) + js
    if binary:
        chunks += struct.pack("<II", len(binary), 0x004E4942) + binary
    return struct.pack("<III", 0x46546C67, 2, 12 + len(chunks)) + chunks


def write_glb(
    path: str | os.PathLike[str], xyz: np.ndarray, rgb: np.ndarray, lines: np.ndarray | None = None
) -> Path:
    """Write :func:`glb_bytes` to ``path`` atomically and return the path."""
    atomic_write_bytes(path, glb_bytes(xyz, rgb, lines))
    return Path(path)
