"""Which scenes ``evaluate`` runs on: named, a subset, everything present, or what saved predictions hold."""

from __future__ import annotations

from pathlib import Path

from vggtctl.errors import InputError, UsageError
from vggtctl.services.eval_config import EvalConfig


def select_scenes(root: Path, config: EvalConfig) -> list[str]:
    """Scene names to evaluate, in order; errors name what is missing and how to get it."""
    from vggtctl.data.eth3d import SUBSETS, list_scenes

    present = list_scenes(root)
    if config.scenes:
        missing = [s for s in config.scenes if s not in present]
        if missing:
            raise InputError(
                f"scene(s) {', '.join(missing)} not found under {root} (present: {', '.join(present) or 'none'})",
                f"vggtctl download eth3d --scenes {' '.join(missing)}",
            )
        return list(dict.fromkeys(config.scenes))
    if config.subset:
        if config.subset not in SUBSETS:
            raise UsageError(f"unknown subset {config.subset!r}", f"use one of: {', '.join(SUBSETS)}")
        chosen = [s for s in SUBSETS[config.subset] if s in present]
        if not chosen:
            raise InputError(
                f"no scene of subset {config.subset!r} under {root}",
                f"vggtctl download eth3d --subset {config.subset}",
            )
        return chosen
    if not present:
        raise InputError(
            f"no ETH3D scene under {root}", "vggtctl download eth3d --subset facades (or pass --data DIR)"
        )
    return present


def _scenes_for_run(root: Path, config: EvalConfig) -> list[str]:
    if config.predictions is None:
        return select_scenes(root, config)
    pred_dir = Path(config.predictions)
    if not pred_dir.is_dir():
        raise InputError(
            f"predictions folder {pred_dir} does not exist", "run `vggtctl infer IMAGES --out DIR` first"
        )
    if (pred_dir / "predictions.npz").is_file():
        if config.scenes and len(config.scenes) == 1:
            return select_scenes(root, config)
        if config.scenes or config.subset:
            raise UsageError(
                f"{pred_dir} holds the predictions of one scene, but several scenes were selected",
                "pass one --scenes NAME, or a folder with one <scene>/predictions.npz per scene",
            )
        return [_scene_of_predictions(root, pred_dir)]
    # Hidden folders are the staging folders of infer runs that have not finished: not scenes.
    available = sorted(p.parent.name for p in pred_dir.glob("[!.]*/predictions.npz"))
    if not available:
        raise InputError(
            f"no predictions.npz in {pred_dir} or its sub-folders",
            "run `vggtctl infer <scene>/images/dslr_images_undistorted --out DIR/<scene>` first",
        )
    if config.scenes or config.subset:
        chosen = select_scenes(root, config)
        missing = [s for s in chosen if s not in available]
        if missing:
            raise InputError(
                f"no predictions for scene(s) {', '.join(missing)} in {pred_dir} (found: {', '.join(available)})",
                "run `vggtctl infer` for them, or drop them from --scenes",
            )
        return chosen
    present = select_scenes(root, EvalConfig())
    unknown = [s for s in available if s not in present]
    if unknown:
        raise InputError(
            f"predictions for {', '.join(unknown)} but no such scene under {root}",
            "pass --data with the ETH3D root",
        )
    return available


def _scene_of_predictions(root: Path, pred_dir: Path) -> str:
    """The scene a single predictions file was made from, found by its source image paths."""
    from vggtctl.io.predictions import load_predictions

    sources = [Path(str(s)) for s in load_predictions(pred_dir)["source_files"]]
    names = select_scenes(root, EvalConfig())
    for s in sources:
        for part in s.parts:
            if part in names:
                return part
    raise InputError(
        f"cannot tell which scene {pred_dir / 'predictions.npz'} belongs to (sources like {sources[0] if sources else '?'})",
        "pass --scenes NAME",
    )
