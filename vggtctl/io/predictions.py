"""``predictions.npz``: VGGT outputs (reference key names, no batch dim) plus what is needed to map
model pixels back to the user's images.

Keys: the model outputs (``pose_enc [S,9]``, ``pose_enc_list [4,S,9]``, ``depth [S,H,W,1]``,
``depth_conf [S,H,W]``, ``world_points [S,H,W,3]``, ``world_points_conf [S,H,W]``, ``images [S,3,H,W]``,
``track``/``vis``/``conf`` when queried), the derived ``extrinsic [S,3,4]`` (world-to-camera, OpenCV axes),
``intrinsic [S,3,3]`` (model pixels, ``cx = W/2``), ``world_points_from_depth [S,H,W,3]``, and
``image_size_hw [2]``, ``source_files [S]``, ``orig_hw [S,2]``, ``resized_hw [S,2]``, ``scale_xy [S,2]``,
``offset_xy [S,2]``, ``provenance`` (a JSON string).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vggtctl.errors import InputError
from vggtctl.io.image_geometry import ImageGeometry
from vggtctl.utils.atomic import atomic_open

FILENAME = "predictions.npz"
META = "meta.json"
INFER_TOOL = "vggtctl infer"
# What ``vggtctl infer`` writes besides predictions.npz and meta.json: their presence without a
# meta.json means an interrupted run of an older vggtctl (today's runs move meta.json in last).
_INFER_NAMES = ("points.ply", "colmap", "frames")
_RERUN = "re-run `vggtctl infer IMAGES --out DIR` to write the folder again"


def save_predictions(
    out_dir: str | os.PathLike[str],
    preds: Mapping[str, np.ndarray],
    geometries: Sequence[ImageGeometry],
    source_files: Sequence[str],
    provenance: Any = None,
) -> Path:
    """Write ``out_dir/predictions.npz`` atomically (uncompressed, loadable without pickle).

    Args:
        out_dir: Output folder (created).
        preds: Outputs of :func:`vggtctl.services.infer.predict` (no batch dim).
        geometries: One :class:`ImageGeometry` per frame.
        source_files: One name per frame (the file it came from).
        provenance: A dataclass with ``to_dict()``, a dict, or ``None``.

    Returns:
        The path of the written file.
    """
    n = len(geometries)
    if len(source_files) != n:
        raise ValueError(f"{len(source_files)} source files for {n} geometries")
    arrays: dict[str, np.ndarray] = {k: np.asarray(v) for k, v in preds.items()}
    if "images" in arrays:
        arrays["image_size_hw"] = np.array(arrays["images"].shape[-2:], dtype=np.int64)
    elif geometries:
        arrays["image_size_hw"] = np.array(geometries[0].out_hw, dtype=np.int64)
    arrays["source_files"] = np.array([str(s) for s in source_files], dtype=np.str_)
    arrays["orig_hw"] = np.array([g.orig_hw for g in geometries], dtype=np.int64).reshape(n, 2)
    arrays["resized_hw"] = np.array([g.resized_hw for g in geometries], dtype=np.int64).reshape(n, 2)
    arrays["scale_xy"] = np.array([g.scale_xy for g in geometries], dtype=np.float64).reshape(n, 2)
    arrays["offset_xy"] = np.array([g.offset_xy for g in geometries], dtype=np.float64).reshape(n, 2)
    if provenance is not None:
        prov = provenance.to_dict() if hasattr(provenance, "to_dict") else dict(provenance)
        arrays["provenance"] = np.array(json.dumps(prov, default=str))
    path = Path(out_dir) / FILENAME
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]
    return path


def load_predictions(path_or_dir: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a ``predictions.npz`` (or the one inside a folder) into a dict of arrays.

    Raises:
        InputError: Missing file or not a predictions file.
    """
    p = Path(path_or_dir)
    if p.is_dir():
        p = p / FILENAME
    if not p.is_file():
        raise InputError(
            f"no predictions at {p}", "run `vggtctl infer IMAGES --out DIR` first, then pass DIR"
        )
    meta = check_complete(p.parent)
    try:
        with np.load(p, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise InputError(f"{p} is not a readable predictions.npz: {e}", "re-run `vggtctl infer`") from None
    if "extrinsic" not in data and "pose_enc" not in data:
        raise InputError(f"{p} has no cameras (keys: {sorted(data)[:12]})", "re-run `vggtctl infer`")
    frames = (meta or {}).get("frames")
    if isinstance(frames, list) and "source_files" in data and len(frames) != len(data["source_files"]):
        raise InputError(
            f"{p} holds {len(data['source_files'])} frames but {p.parent / META} describes {len(frames)}: "
            "the two come from different runs (a run was interrupted while writing)",
            _RERUN,
        )
    return data


def is_staging_folder(folder: Path) -> bool:
    """True for the hidden ``.<name>.<pid>.tmp`` folder an unfinished ``vggtctl infer`` writes into."""
    name = folder.name
    return name.startswith(".") and name.endswith(".tmp") and name[:-4].rpartition(".")[2].isdigit()


def read_infer_meta(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``folder/meta.json`` when ``vggtctl infer`` wrote it, else None (missing, unreadable, another tool)."""
    try:
        meta = json.loads((Path(folder) / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("tool") == INFER_TOOL else None


def check_complete(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Refuse a ``vggtctl infer`` output folder that is not whole; returns its meta.json (or None).

    The rule (docs/run-directory.md): ``meta.json`` is written last and lists every output file with
    its size. A folder is complete when its meta.json exists and every listed file has that size. A
    folder holding only ``predictions.npz`` (written by :func:`save_predictions`, which is atomic) is
    complete too. Anything else (infer outputs without meta.json, sizes that differ, a staging folder)
    is an interrupted or mixed run.

    Raises:
        InputError: The folder is incomplete.
    """
    folder = Path(folder)
    if is_staging_folder(folder):
        raise InputError(
            f"{folder} is the staging folder of a vggtctl infer run that has not finished (or was killed)",
            f"pass the output folder itself ({folder.parent / folder.name[1:].rsplit('.', 2)[0]}) "
            "once the run has finished",
        )
    meta_path = folder / META
    if not meta_path.exists():
        leftovers = [n for n in _INFER_NAMES if (folder / n).exists()]
        if leftovers:
            raise InputError(
                f"{folder} is an incomplete vggtctl infer output: it has {', '.join(leftovers)} but no "
                f"{META}, which a finished run writes last (the run was interrupted)",
                _RERUN,
            )
        return None
    meta = read_infer_meta(folder)
    if meta is None:
        return None
    outputs = meta.get("outputs")
    if isinstance(outputs, dict):
        for rel, size in outputs.items():
            f = folder / rel
            have = f.stat().st_size if f.is_file() else None
            if have != size:
                what = "is missing" if have is None else f"has {have} bytes, not the {size} recorded"
                raise InputError(
                    f"{folder} is not one complete vggtctl infer output: {rel} {what} in {META}", _RERUN
                )
    return meta


def output_sizes(folder: str | os.PathLike[str]) -> dict[str, int]:
    """``{relative posix path: bytes}`` of every file under ``folder`` (what meta.json's ``outputs`` lists)."""
    root = Path(folder)
    return {
        p.relative_to(root).as_posix(): p.stat().st_size
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != META
    }


def previous_outputs(folder: str | os.PathLike[str]) -> list[str]:
    """Top-level names a previous ``vggtctl infer`` run wrote into ``folder`` (from its meta.json).

    A new run replaces them as a whole, so no file of the old run stays beside the new ones.
    """
    meta = read_infer_meta(folder)
    if meta is None:
        return []
    names = {rel.split("/", 1)[0] for rel in (meta.get("outputs") or {})}
    names |= {Path(str(v)).name for v in (meta.get("files") or {}).values()}
    if any(
        str(f.get("name", "")).startswith("frames/") for f in meta.get("frames") or [] if isinstance(f, dict)
    ):
        names.add("frames")
    return sorted(n for n in names if n and n not in (".", ".."))


def geometries_from_predictions(preds: Mapping[str, np.ndarray]) -> list[ImageGeometry]:
    """Rebuild the per-frame :class:`ImageGeometry` stored by :func:`save_predictions`."""
    out_hw = tuple(int(v) for v in preds["image_size_hw"])
    orig = preds["orig_hw"]
    offs = preds["offset_xy"]
    if "resized_hw" in preds:
        resized = preds["resized_hw"]
    else:
        scale = preds["scale_xy"]
        resized = np.rint(np.stack([orig[:, 0] * scale[:, 1], orig[:, 1] * scale[:, 0]], axis=1))
    return [
        ImageGeometry(
            (int(orig[i, 0]), int(orig[i, 1])),
            (int(resized[i, 0]), int(resized[i, 1])),
            (int(round(offs[i, 0])), int(round(offs[i, 1]))),
            (out_hw[0], out_hw[1]),
        )
        for i in range(len(orig))
    ]
