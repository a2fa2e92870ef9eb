"""Read frames from a video file with OpenCV (every N-th frame), as RGB PIL images."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vggtctl.errors import InputError, UsageError

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})


@dataclass
class VideoFrame:
    """One decoded frame: its index in the video, a stable name and the RGB image."""

    index: int
    name: str
    image: Image.Image


def is_video(path: str | os.PathLike[str]) -> bool:
    """True when the file extension is a known video container (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def read_video_frames(
    path: str | os.PathLike[str], every: int = 1, limit: int | None = None
) -> list[VideoFrame]:
    """Decode every ``every``-th frame (0, every, 2*every, ...) of a video.

    Args:
        path: The video file.
        every: Keep one frame out of ``every``.
        limit: Stop after this many kept frames (callers pass their frame budget + 1 to detect overflow).

    Returns:
        The kept frames, named ``<stem>_<index:06d>.png``.

    Raises:
        InputError: The file is missing or OpenCV cannot decode it.
        UsageError: ``every`` is not positive.
    """
    import cv2

    p = Path(path)
    if every < 1:
        raise UsageError(f"--every must be >= 1, got {every}", "use --every 1 to keep every frame")
    if not p.is_file():
        raise InputError(f"video not found: {p}", "check the path")
    cap = cv2.VideoCapture(str(p))
    try:
        if not cap.isOpened():
            raise InputError(
                f"cannot open video {p} with OpenCV",
                "convert it to H.264 MP4, e.g. with ffmpeg -i IN out.mp4",
            )
        frames: list[VideoFrame] = []
        index = 0
        while limit is None or len(frames) < limit:
            ok = cap.grab()
            if not ok:
                break
            if index % every == 0:
                ok, bgr = cap.retrieve()
                if not ok or bgr is None:
                    raise InputError(
                        f"{p}: cannot decode frame {index}", "the video may be truncated or corrupt"
                    )
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                frames.append(VideoFrame(index, f"{p.stem}_{index:06d}.png", Image.fromarray(rgb)))
            index += 1
    finally:
        cap.release()
    if not frames:
        raise InputError(f"{p}: no frames could be decoded", "is the file a complete video?")
    return frames
