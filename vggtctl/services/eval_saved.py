"""Saved ``vggtctl infer`` predictions: read them and match their frames to the scene's images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vggtctl.errors import InputError


def _load_saved(
    scene: Any, pred_root: Path
) -> tuple[list[Any], dict[str, np.ndarray], list[Any], dict | None]:
    import json

    from vggtctl.io.predictions import geometries_from_predictions, load_predictions

    folder = pred_root if (pred_root / "predictions.npz").is_file() else pred_root / scene.name
    preds = load_predictions(folder)
    for key in ("extrinsic", "depth", "source_files", "orig_hw", "image_size_hw"):
        if key not in preds:
            raise InputError(
                f"{folder / 'predictions.npz'} has no {key!r}",
                "re-run `vggtctl infer` with this vggtctl version",
            )
    frames = match_frames(scene, [str(s) for s in preds["source_files"]], preds["orig_hw"], folder)
    geoms = geometries_from_predictions(preds)
    prov = None
    if "provenance" in preds:
        try:
            prov = json.loads(str(preds["provenance"]))
        except ValueError:
            prov = {"raw": str(preds["provenance"])}
    return frames, preds, geoms, prov


def match_frames(scene: Any, source_files: list[str], orig_hw: np.ndarray, where: Path) -> list[Any]:
    """The scene frames that saved predictions were made from, in prediction order.

    A source path is matched to the scene's image files first, then (predictions made from another copy
    of the data) by its ``images.txt`` name or file name, provided no folder of the path names another
    scene. The image size recorded with the predictions must match the calibration.

    Raises:
        InputError: A source is not an image of this scene, or its size differs.
    """
    from vggtctl.data.eth3d import TRAINING_SCENES

    by_path = {f.image_path.resolve(): f for f in scene.frames}
    by_name = {f.name: f for f in scene.frames} | {f.stem: f for f in scene.frames}
    hint = "evaluate each predictions folder with the scene it was made from (--scenes NAME)"
    frames = []
    for i, src in enumerate(source_files):
        p = Path(src)
        f = by_path.get(p.resolve()) if p.is_file() else None
        if f is None:  # made from another copy of the data, or elsewhere: match by name
            others = set(TRAINING_SCENES) | {q.name for q in scene.root.parent.iterdir() if q.is_dir()}
            foreign = [part for part in p.parts[:-1] if part in others and part != scene.name]
            f = None if foreign else (by_name.get("/".join(p.parts[-2:])) or by_name.get(p.name))
        if f is None:
            raise InputError(
                f"{where / 'predictions.npz'}: frame {i} comes from {src}, not an image of scene {scene.name}",
                hint,
            )
        if tuple(int(v) for v in orig_hw[i]) != (f.height, f.width):
            raise InputError(
                f"{where / 'predictions.npz'}: frame {i} ({src}) was {orig_hw[i][1]}x{orig_hw[i][0]}, "
                f"scene {scene.name} calibrates {f.name} as {f.width}x{f.height}",
                hint,
            )
        frames.append(f)
    if len({f.name for f in frames}) != len(frames):
        raise InputError(f"{where / 'predictions.npz'} holds the same image twice", "re-run `vggtctl infer`")
    return frames
