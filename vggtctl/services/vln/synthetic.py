"""Generated trajectory folders for tests, the demo and the benchmark (no simulator needed).

Each episode is ``instruction.txt`` plus ``step_XXXX_<action>.png`` frames: a seeded random walk of
actions over smoothly shifting colour fields, so frames of an episode resemble each other as a moving
camera's would. The pictures carry no navigation meaning.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from vggtctl.services.vln.prompt import ACTIONS
from vggtctl.services.vln.records import INSTRUCTION_FILE

_INSTRUCTIONS = (
    "Walk forward past the table and stop at the door.",
    "Turn left, go down the hallway and wait near the stairs.",
    "Turn right into the kitchen and stop by the chair.",
)


def write_trajectories(
    root: str | os.PathLike[str],
    episodes: int = 2,
    steps: int = 4,
    width: int = 64,
    height: int = 48,
    seed: int = 0,
) -> list[Path]:
    """Write ``episodes`` episode folders of ``steps`` frames under ``root``; returns the folders."""
    rng = np.random.default_rng(seed)
    out = []
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for e in range(episodes):
        ep = Path(root) / f"ep{e:03d}"
        ep.mkdir(parents=True, exist_ok=True)
        (ep / INSTRUCTION_FILE).write_text(_INSTRUCTIONS[e % len(_INSTRUCTIONS)] + "\n", encoding="utf-8")
        phase = rng.uniform(0, 2 * np.pi, size=3)
        for s in range(steps):
            action = "STOP" if s == steps - 1 else ACTIONS[int(rng.integers(0, 3))]
            shift = 0.15 * s
            img = np.stack(
                [127 + 120 * np.sin(xx / (7 + c) + yy / (11 + 2 * c) + phase[c] + shift) for c in range(3)],
                -1,
            )
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(ep / f"step_{s:04d}_{action.lower()}.png")
        out.append(ep)
    return out
