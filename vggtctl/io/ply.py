"""PLY point clouds: write binary little-endian float32 xyz (+ uint8 rgb, + float scalars); read any
vertex-only PLY (ascii or binary, either endianness) that MeshLab, Open3D or ETH3D's scans produce."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vggtctl.errors import InputError
from vggtctl.utils.atomic import atomic_open

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_NP_TO_PLY = {"f4": "float", "f8": "double", "u1": "uchar", "i1": "char", "i4": "int", "u4": "uint",
              "i2": "short", "u2": "ushort"}  # fmt: skip


def write_ply(
    path: str | os.PathLike[str],
    xyz: np.ndarray,
    rgb: np.ndarray | None = None,
    scalars: dict[str, np.ndarray] | None = None,
) -> None:
    """Write a binary little-endian PLY atomically: float32 x,y,z, optional uchar red/green/blue and
    optional extra per-vertex scalar properties (kept in their dtype, e.g. float32 ``confidence``)."""
    xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
    n = len(xyz)
    fields: list[tuple[str, str]] = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if rgb is not None:
        rgb = np.asarray(rgb).reshape(-1, 3)
        if len(rgb) != n:
            raise ValueError(f"rgb has {len(rgb)} rows, xyz has {n}")
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    extra = {k: np.asarray(v).reshape(-1) for k, v in (scalars or {}).items()}
    for k, v in extra.items():
        if len(v) != n:
            raise ValueError(f"scalar {k!r} has {len(v)} values, xyz has {n}")
        fields.append((k, "<" + v.dtype.str[1:] if v.dtype.itemsize > 1 else v.dtype.str[1:]))
    data = np.empty(n, dtype=np.dtype(fields))
    data["x"], data["y"], data["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    if rgb is not None:
        rgb8 = np.clip(rgb, 0, 255).astype(np.uint8) if rgb.dtype != np.uint8 else rgb
        data["red"], data["green"], data["blue"] = rgb8[:, 0], rgb8[:, 1], rgb8[:, 2]
    for k, v in extra.items():
        data[k] = v
    header = ["ply", "format binary_little_endian 1.0", "comment written by vggtctl", f"element vertex {n}"]
    for name, dt in fields:
        header.append(f"property {_NP_TO_PLY[np.dtype(dt).str[1:]]} {name}")
    header.append("end_header")
    with atomic_open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(data.tobytes())


def read_ply(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read the vertex element of a PLY file into ``{property: array}`` (``xyz`` added as ``[N,3]``).

    Raises ``InputError`` naming the file and header line for anything malformed.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read PLY {p}: {e.strerror}", "check the path and permissions") from e
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise InputError(
            f"{p} is not a PLY file (no 'ply' magic / 'end_header')", "is the download complete?"
        )
    nl = raw.find(b"\n", end)
    body_start = nl + 1 if nl >= 0 else len(raw)
    lines = raw[:end].decode("ascii", errors="replace").splitlines()
    fmt = None
    elements: list[tuple[str, int, list[tuple[str, str]]]] = []
    for i, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts or parts[0] in ("ply", "comment", "obj_info"):
            continue
        if parts[0] == "format":
            fmt = parts[1] if len(parts) > 1 else None
        elif parts[0] == "element" and len(parts) == 3:
            elements.append((parts[1], int(parts[2]), []))
        elif parts[0] == "property" and elements:
            if parts[1] == "list":
                elements[-1][2].append((parts[-1], "list"))
            elif len(parts) == 3 and parts[1] in _PLY_TYPES:
                elements[-1][2].append((parts[2], _PLY_TYPES[parts[1]]))
            else:
                raise InputError(f"{p}: header line {i}: unsupported property {line.strip()!r}")
        else:
            raise InputError(f"{p}: header line {i}: unexpected {line.strip()!r}")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise InputError(f"{p}: unknown PLY format {fmt!r}")
    if not elements or elements[0][0] != "vertex":
        raise InputError(f"{p}: the first element must be 'vertex' (got {[e[0] for e in elements]})")
    _, n, props = elements[0]
    if any(t == "list" for _, t in props):
        raise InputError(f"{p}: list properties on vertices are not supported")
    if fmt == "ascii":
        text = raw[body_start:].decode("ascii", errors="replace").split("\n")
        rows = [r.split() for r in text[:n]]
        if len(rows) < n or any(len(r) < len(props) for r in rows):
            raise InputError(
                f"{p}: ascii body has fewer than {n} complete vertex rows", "the file is truncated"
            )
        arr = np.array(rows, dtype=np.float64)[:, : len(props)] if rows else np.zeros((0, len(props)))
        out = {name: arr[:, j].astype(t) for j, (name, t) in enumerate(props)}
    else:
        order = "<" if fmt == "binary_little_endian" else ">"
        dt = np.dtype([(name, order + t) for name, t in props])
        need = n * dt.itemsize
        if len(raw) - body_start < need:
            raise InputError(
                f"{p}: body has {len(raw) - body_start} bytes, {n} vertices need {need}",
                "the file is truncated",
            )
        rec = np.frombuffer(raw, dtype=dt, count=n, offset=body_start)
        out = {name: rec[name].astype(rec[name].dtype.newbyteorder("=")) for name, _ in props}
    if all(k in out for k in ("x", "y", "z")):
        out["xyz"] = np.stack([out["x"], out["y"], out["z"]], axis=1)
    return out
