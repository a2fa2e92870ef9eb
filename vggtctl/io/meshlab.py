"""MeshLab project files (``scan_alignment.mlp``): which PLY meshes, placed by which 4x4 matrix."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from vggtctl.errors import InputError

_HINT = "re-download the scene's scan_eval kind (vggtctl download eth3d --scenes <scene> --kinds scan_eval)"


def read_scan_alignment(path: str | os.PathLike[str]) -> list[tuple[Path, np.ndarray]]:
    """Parse a MeshLab project (``scan_alignment.mlp``): ``(PLY path, 4x4 global_T_mesh)`` per mesh.

    Errors name the file and line.
    """
    from xml.parsers import expat

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}", _HINT) from e
    meshes: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    in_matrix = False
    parser = expat.ParserCreate()

    def start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal current, in_matrix
        if tag == "MLMesh":
            current = {"attrs": attrs, "line": parser.CurrentLineNumber, "matrix": None, "mline": None}
            meshes.append(current)
        elif tag == "MLMatrix44" and current is not None:
            in_matrix = True
            current["matrix"], current["mline"] = "", parser.CurrentLineNumber

    def end(tag: str) -> None:
        nonlocal current, in_matrix
        if tag == "MLMatrix44":
            in_matrix = False
        elif tag == "MLMesh":
            current = None

    def chars(text: str) -> None:
        if in_matrix and current is not None:
            current["matrix"] += text

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(data, True)
    except expat.ExpatError as e:
        raise InputError(
            f"{path}:{e.lineno}: malformed XML ({expat.errors.messages[e.code]})",
            _HINT,
        ) from None
    out = []
    for mesh in meshes:
        ln = mesh["line"]
        fname = mesh["attrs"].get("filename") or mesh["attrs"].get("label")
        if not fname:
            raise InputError(f"{path}:{ln}: MLMesh without a filename attribute", _HINT)
        if mesh["matrix"] is None:
            raise InputError(f"{path}:{ln}: MLMesh {fname!r} has no MLMatrix44", _HINT)
        mln = mesh["mline"]
        try:
            vals = [float(t) for t in mesh["matrix"].split()]
        except ValueError:
            raise InputError(f"{path}:{mln}: MLMatrix44 of {fname!r} holds a non-number", _HINT) from None
        if len(vals) != 16:
            raise InputError(
                f"{path}:{mln}: MLMatrix44 of {fname!r} has {len(vals)} numbers, expected 16", _HINT
            )
        T = np.array(vals, dtype=np.float64).reshape(4, 4)
        if not np.allclose(T[3], [0, 0, 0, 1], atol=1e-6):
            raise InputError(
                f"{path}:{mln}: MLMatrix44 of {fname!r} must end with the row 0 0 0 1, got {T[3].tolist()}",
                _HINT,
            )
        out.append((path.parent / fname, T))
    if not out:
        raise InputError(f"{path}: no MLMesh entries", _HINT)
    return out
