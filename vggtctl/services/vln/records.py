"""Training samples from JanusVLN's JSON array / JSONL files or from trajectory folders.

A record is one step of one episode: its ordered frames (history first, the current frame last), the
user turn (with one ``<image>`` per frame) and the answer (the action to take at the current frame).

Trajectory folders hold ``step_XXXX_<action>.png`` frames (the file name is the action to take at that
frame) and ``instruction.txt``; the folder given is either one episode or a folder of episodes. Each
frame i becomes a sample whose images follow JanusVLN's history rule (:func:`history_indices`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vggtctl.errors import InputError
from vggtctl.services.vln.prompt import ACTIONS, IMAGE, action_from_filename, human_text

MAX_IMAGES = 9
INSTRUCTION_FILE = "instruction.txt"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class Record:
    """One training sample.

    Attributes:
        id: ``<episode>/<frame file>`` for trajectories, the record's ``id`` for JSON data.
        images: Frame files in order; the last one is the current observation.
        human: The user turn, one ``<image>`` per frame.
        answer: The assistant's answer (one of :data:`ACTIONS` for navigation data).
    """

    id: str
    images: tuple[Path, ...]
    human: str
    answer: str


def history_indices(step: int, max_images: int = MAX_IMAGES) -> list[int]:
    """Frames a sample at ``step`` sees: all up to step 8, then 9 at ``linspace(0, step, 9)`` (as ints).

    The first frame and the current frame are always in; the current frame is last.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < max_images:
        return list(range(step + 1))
    # numpy's linspace(..., dtype=int) truncates toward zero; the same in integer arithmetic.
    return [(i * step) // (max_images - 1) for i in range(max_images)]


def _bad(where: str, what: str) -> InputError:
    return InputError(
        f"{where}: {what}",
        "records need 'id', 'images' (a list of paths) and 'conversations' "
        '([{"from": "human", "value": ... <image> ...}, {"from": "gpt", "value": ACTION}])',
    )


def _record(raw: Any, where: str, root: Path) -> Record:
    if not isinstance(raw, dict):
        raise _bad(where, f"expected an object, got {type(raw).__name__}")
    images = raw.get("images", raw.get("image"))
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not images or not all(isinstance(i, str) for i in images):
        raise _bad(where, "'images' must be a non-empty list of paths")
    conv = raw.get("conversations")
    if not isinstance(conv, list) or len(conv) < 2:
        raise _bad(where, "'conversations' must hold a human turn and a gpt turn")
    human = next((t.get("value") for t in conv if isinstance(t, dict) and t.get("from") == "human"), None)
    answer = next((t.get("value") for t in conv if isinstance(t, dict) and t.get("from") == "gpt"), None)
    if not isinstance(human, str) or not isinstance(answer, str):
        raise _bad(where, "'conversations' needs a 'human' and a 'gpt' turn with string values")
    if human.count(IMAGE) != len(images):
        raise _bad(
            where, f"the human turn has {human.count(IMAGE)} {IMAGE} but there are {len(images)} images"
        )
    paths = tuple(p if p.is_absolute() else root / p for p in (Path(i) for i in images))
    return Record(str(raw.get("id", where)), paths, human, answer.strip())


def read_json_records(path: Path, image_root: Path | None = None) -> list[Record]:
    """Records of a JSON array (``.json``) or JSON-lines (``.jsonl``) file.

    Args:
        path: The annotation file.
        image_root: Folder relative image paths start from (default: the file's folder).

    Raises:
        InputError: Unreadable file, bad JSON (with the line), or a record without the fields.
    """
    root = image_root if image_root is not None else path.parent
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}", "check the --data path") from None
    stripped = text.lstrip()
    if path.suffix == ".jsonl" or (stripped and stripped[0] == "{" and "\n{" in stripped):
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except ValueError as e:
                raise InputError(f"{path}:{n} is not JSON ({e})", "one JSON object per line") from None
            out.append(_record(raw, f"{path}:{n}", root))
        return out
    try:
        data = json.loads(text)
    except ValueError as e:
        raise InputError(f"{path} is not JSON ({e})", "a JSON array of records, or .jsonl") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise InputError(f"{path} holds a {type(data).__name__}", "a JSON array of records")
    return [_record(raw, f"{path}[{i}]", root) for i, raw in enumerate(data)]


def _episode_dirs(folder: Path) -> list[Path]:
    if (folder / INSTRUCTION_FILE).is_file():
        return [folder]
    return sorted(p for p in folder.iterdir() if p.is_dir() and (p / INSTRUCTION_FILE).is_file())


def read_trajectory_records(folder: Path) -> list[Record]:
    """One record per frame of every episode under ``folder`` (see the module doc for the layout).

    Raises:
        InputError: No episode, an episode without frames, or frames whose names carry no action.
    """
    episodes = _episode_dirs(folder)
    if not episodes:
        raise InputError(
            f"no trajectory episodes in {folder} (no {INSTRUCTION_FILE} in it or in its sub-folders)",
            f"an episode folder holds step_0000_<action>.png frames and {INSTRUCTION_FILE}",
        )
    out: list[Record] = []
    for ep in episodes:
        instruction = (ep / INSTRUCTION_FILE).read_text(encoding="utf-8").strip()
        frames = sorted(
            (p for p in ep.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES and p.name.startswith("step_")),
            key=lambda p: int(p.name.split("_")[1]) if p.name.split("_")[1].isdigit() else -1,
        )
        if not frames:
            raise InputError(f"episode {ep} has no step_XXXX_<action> frames", "render the episode's frames")
        for i, frame in enumerate(frames):
            action = action_from_filename(frame.name)
            if action is None:
                raise InputError(
                    f"{frame}: the file name carries no action",
                    f"name frames step_XXXX_<action>.png with action one of {', '.join(a.lower() for a in ACTIONS)}",
                )
            images = tuple(frames[j] for j in history_indices(i))
            out.append(
                Record(f"{ep.name}/{frame.name}", images, human_text(instruction, len(images)), action)
            )
    return out


def read_records(
    data: str | os.PathLike[str], image_root: str | os.PathLike[str] | None = None
) -> list[Record]:
    """Records from a JSON / JSONL file or a trajectory folder.

    Raises:
        InputError: Missing path, unreadable data, or no records in it.
    """
    path = Path(data)
    if not path.exists():
        raise InputError(f"--data {path} does not exist", "pass a .json/.jsonl file or a trajectory folder")
    records = (
        read_trajectory_records(path)
        if path.is_dir()
        else read_json_records(path, Path(image_root) if image_root else None)
    )
    if not records:
        raise InputError(f"--data {path} holds no samples", "check the file or folder")
    return records
