"""Generated VLN data for the cache tests: trajectory folders of random frames and JanusVLN data files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from vggtctl.services.vlncache.records import history_indices

# 80×60 frames → width 56 crop → 42×56 model input (a 3×4 patch grid): cheap on the tiny model.
SIZE = (80, 60)
WIDTH = 56


def write_episode(folder: Path, steps: int, seed: int, size: tuple[int, int] = SIZE) -> list[Path]:
    """``steps`` frames ``step_XXXX_<action>.png`` of smooth random colour (seeded)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    paths = []
    for i in range(steps):
        base = rng.integers(0, 255, (h // 10 + 1, w // 10 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR)
        action = "stop" if i == steps - 1 else ("move_forward" if i % 3 else "turn_left")
        path = folder / f"step_{i:04d}_{action}.png"
        img.save(path)
        paths.append(path)
    return paths


def write_data_file(path: Path, episodes: dict[str, list[Path]], jsonl: bool = False) -> Path:
    """A JanusVLN data file (JSON array, or JSONL) with relative image paths, one record per frame."""
    records = []
    for episode, frames in episodes.items():
        for i, frame in enumerate(frames):
            images = [str(frames[j].relative_to(path.parent)) for j in history_indices(i)]
            human = "This is your historical observation:" + "<image>" * (len(images) - 1)
            records.append(
                {
                    "id": f"{episode}/{frame.name}",
                    "images": images,
                    "conversations": [
                        {"from": "human", "value": human + "This is your current observation:<image>"},
                        {"from": "gpt", "value": "MOVE_FORWARD"},
                    ],
                }
            )
    if jsonl:
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records, indent=1))
    return path
