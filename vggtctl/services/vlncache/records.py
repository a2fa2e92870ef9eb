"""Samples of a JanusVLN data file or of trajectory folders: an id and the ordered frame paths.

Data files: JanusVLN's JSON array or JSONL, records ``{"id", "images": [...], "conversations"}`` with
image paths absolute or relative to an image root (default: the data file's folder). The last image is
the current frame. Trajectory folders hold ``step_XXXX_<action>.png`` per episode; they give one sample
per frame with JanusVLN's history rule: frames 0..i while i <= 8, else 9 frames at
``linspace(0, i, 9)`` (integer part), the current frame last. Malformed records are reported with the
file and line number, all at once.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vggtctl.errors import InputError

STEP_FRAME = re.compile(r"^step_(\d+)_.+\.(png|jpg|jpeg)$", re.IGNORECASE)
#: JanusVLN keeps at most 8 history frames + the current one.
MAX_FRAMES = 9
_MAX_LISTED = 10


@dataclass(frozen=True)
class CacheSample:
    """One training sample: its id and frame paths in order (history..., current)."""

    id: str
    frames: tuple[Path, ...]


def history_indices(i: int, max_frames: int = MAX_FRAMES) -> list[int]:
    """JanusVLN's frame indices for the sample at step ``i``: all while few, else evenly spread."""
    if i < max_frames:
        return list(range(i + 1))
    # np.linspace(0, i, 9, dtype=int) truncates toward zero; the same in integer arithmetic.
    return [(k * i) // (max_frames - 1) for k in range(max_frames)]


def _problem(errors: list[str], where: str, what: str) -> None:
    errors.append(f"{where}: {what}")


def _record(obj: object, where: str, root: Path, errors: list[str]) -> CacheSample | None:
    if not isinstance(obj, dict):
        _problem(errors, where, f"a record must be an object, got {type(obj).__name__}")
        return None
    sid, images = obj.get("id"), obj.get("images", obj.get("image"))
    if isinstance(images, str):
        images = [images]
    if not isinstance(sid, str | int) or str(sid) == "":
        _problem(errors, where, "missing or empty 'id'")
        return None
    if not isinstance(images, list) or not images or not all(isinstance(p, str) and p for p in images):
        _problem(errors, where, f"record {sid!r}: 'images' must be a non-empty list of paths")
        return None
    frames = tuple(Path(p) if os.path.isabs(p) else root / p for p in images)
    return CacheSample(str(sid), frames)


def _json_array(text: str, path: Path, root: Path, errors: list[str]) -> list[CacheSample]:
    """Decode the array element by element so every bad record gets its line number."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    out: list[CacheSample] = []
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            raise InputError(f"{path}: the JSON array is not closed", "is the file complete?")
        if text[pos] == "]":
            return out
        line = text.count("\n", 0, pos) + 1
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise InputError(
                f"{path}:{e.lineno}: invalid JSON ({e.msg})", "fix the record or regenerate the file"
            ) from None
        sample = _record(obj, f"{path}:{line}", root, errors)
        if sample is not None:
            out.append(sample)


def read_data_file(path: Path, image_root: Path | None = None) -> list[CacheSample]:
    """Samples of a JSON array or JSONL data file (relative images under ``image_root`` or its folder).

    Raises:
        InputError: Unreadable file, invalid JSON, or malformed records (every one, with ``file:line``),
            or duplicate sample ids.
    """
    root = image_root if image_root is not None else path.parent
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(
            f"cannot read data file {path}: {e}", "pass a JanusVLN .json or .jsonl file"
        ) from None
    errors: list[str] = []
    stripped = text.lstrip()
    if stripped.startswith("["):
        samples = _json_array(text, path, root, errors)
    else:
        samples = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                _problem(errors, f"{path}:{n}", f"invalid JSON ({e.msg})")
                continue
            sample = _record(obj, f"{path}:{n}", root, errors)
            if sample is not None:
                samples.append(sample)
    seen: set[str] = set()
    for s in samples:
        if s.id in seen:
            errors.append(f"{path}: duplicate sample id {s.id!r}")
        seen.add(s.id)
    if errors:
        shown = "; ".join(errors[:_MAX_LISTED]) + (
            f"; ... ({len(errors)} in all)" if len(errors) > _MAX_LISTED else ""
        )
        raise InputError(
            f"malformed records: {shown}", "each record needs an 'id' and a non-empty 'images' list"
        )
    if not samples:
        raise InputError(f"{path} holds no samples", "pass a JanusVLN data file with at least one record")
    return samples


def _episode_frames(folder: Path) -> list[Path]:
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_FRAME.match(p.name))]
    return [p for _, p in sorted(found)]


def _episode_samples(folder: Path, episode: str) -> Iterator[CacheSample]:
    frames = _episode_frames(folder)
    for i, frame in enumerate(frames):
        yield CacheSample(f"{episode}/{frame.name}", tuple(frames[j] for j in history_indices(i)))


def read_trajectories(folder: Path) -> list[CacheSample]:
    """Samples of trajectory folders: ``folder`` itself holds ``step_XXXX_<action>.png`` or its sub-folders do.

    Raises:
        InputError: No ``step_*`` frames anywhere.
    """
    if _episode_frames(folder):
        samples = list(_episode_samples(folder, folder.name))
    else:
        samples = [
            s
            for sub in sorted(p for p in folder.iterdir() if p.is_dir())
            for s in _episode_samples(sub, sub.name)
        ]
    if not samples:
        raise InputError(
            f"no step_XXXX_<action>.png frames in {folder} or its sub-folders",
            "pass a JanusVLN .json/.jsonl data file or a folder of trajectory folders",
        )
    return samples


def read_samples(data: Path, image_root: Path | None = None) -> list[CacheSample]:
    """Samples of a data file or a folder of trajectories (see the module docstring)."""
    if not data.exists():
        raise InputError(
            f"data not found: {data}", "pass a JanusVLN .json/.jsonl file or a trajectory folder"
        )
    if data.is_dir():
        return read_trajectories(data)
    return read_data_file(data, image_root)
