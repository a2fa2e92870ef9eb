"""Frames from a video file with OpenCV, streamed: a long video never sits decoded in memory.

Two passes, both one frame at a time:

1. :func:`select_video_frames` walks the container (``grab`` only, no colour conversion) and picks the
   frames to keep (every N-th, or one per 1/F seconds) with their timestamps;
2. :func:`iter_video_images` decodes just those frames, in order, yielding one RGB PIL image at a time
   (the caller preprocesses it to the model's size and lets it go).

Timestamps are ``index / fps`` with the container's nominal frame rate (exact for constant-frame-rate
video; for variable-rate video they are the nominal times).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vggtctl.errors import InputError, UsageError

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})


@dataclass(frozen=True)
class VideoFrameRef:
    """One kept frame: its index in the video, its time and a stable name (the pixels are decoded later)."""

    index: int
    timestamp_s: float
    name: str


@dataclass
class VideoFrame:
    """One decoded frame: its index in the video, a stable name and the RGB image."""

    index: int
    name: str
    image: Image.Image
    timestamp_s: float = 0.0


def is_video(path: str | os.PathLike[str]) -> bool:
    """True when the file extension is a known video container (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _open(p: Path):  # type: ignore[no-untyped-def]
    import cv2

    if not p.is_file():
        raise InputError(f"video not found: {p}", "check the path")
    if p.stat().st_size == 0:
        raise InputError(f"video {p} is empty (0 bytes)", "is the file a complete video?")
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        cap.release()
        raise InputError(
            f"cannot open video {p} with OpenCV", "convert it to H.264 MP4, e.g. with ffmpeg -i IN out.mp4"
        )
    return cap


def video_fps(path: str | os.PathLike[str]) -> float:
    """The container's nominal frame rate (0.0 when it does not say)."""
    import cv2

    cap = _open(Path(path))
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        cap.release()
    return fps if fps > 0 else 0.0


def select_video_frames(
    path: str | os.PathLike[str], every: int = 1, fps: float | None = None, limit: int | None = None
) -> list[VideoFrameRef]:
    """Pick the frames to keep, without decoding them to images.

    Args:
        path: The video file.
        every: Keep frames 0, every, 2*every, ... (ignored when ``fps`` is given).
        fps: Keep one frame per ``1/fps`` seconds of video (the first frame at or after each tick).
        limit: Stop after this many kept frames.

    Returns:
        The kept frames, named ``<stem>_<index:06d>.png``.

    Raises:
        InputError: Missing, empty or undecodable file, or a video without frames.
        UsageError: ``every < 1`` or ``fps <= 0``.
    """
    if every < 1:
        raise UsageError(f"every must be >= 1, got {every}", "use 1 to keep every frame")
    if fps is not None and not fps > 0:
        raise UsageError(f"fps must be > 0, got {fps}", "e.g. 2 for two frames per second of video")
    p = Path(path)
    import cv2

    cap = _open(p)
    kept: list[VideoFrameRef] = []
    try:
        native = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if fps is not None and native <= 0:
            raise InputError(
                f"{p}: the container states no frame rate, so --fps cannot pick frames by time",
                "use --every N instead",
            )
        step = 1.0 / fps if fps is not None else None
        next_t = 0.0
        index = 0
        while limit is None or len(kept) < limit:
            if not cap.grab():
                break
            t = index / native if native > 0 else 0.0
            if step is not None:
                # A tiny tolerance: 30 fps sampled at 10 fps must keep frames 0, 3, 6 (not 0, 4, 7).
                keep = t + 1e-9 >= next_t
                if keep:
                    next_t = (math.floor((t + 1e-9) / step) + 1) * step
            else:
                keep = index % every == 0
            if keep:
                kept.append(VideoFrameRef(index, round(t, 6), f"{p.stem}_{index:06d}.png"))
            index += 1
    finally:
        cap.release()
    if not kept:
        raise InputError(
            f"{p}: the video has no frames that OpenCV can decode (0 of {index} read)",
            "is the file a complete video? Re-encode it, e.g. ffmpeg -i IN -c:v libx264 out.mp4",
        )
    return kept


def iter_video_images(
    path: str | os.PathLike[str], indices: Sequence[int]
) -> Iterator[tuple[int, Image.Image]]:
    """Decode the frames at ``indices`` (ascending) one at a time, as RGB PIL images.

    Raises:
        InputError: The video ends before a wanted frame or a frame cannot be decoded.
    """
    import cv2

    p = Path(path)
    wanted = list(indices)
    if not wanted:
        return
    cap = _open(p)
    try:
        index, k = 0, 0
        while k < len(wanted):
            if not cap.grab():
                raise InputError(
                    f"{p}: the video ended at frame {index}, before frame {wanted[k]}",
                    "the file changed or is truncated; run again",
                )
            if index == wanted[k]:
                ok, bgr = cap.retrieve()
                if not ok or bgr is None:
                    raise InputError(
                        f"{p}: cannot decode frame {index}", "the video may be truncated or corrupt"
                    )
                yield index, Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                k += 1
            index += 1
    finally:
        cap.release()


def read_video_frames(
    path: str | os.PathLike[str], every: int = 1, limit: int | None = None, fps: float | None = None
) -> list[VideoFrame]:
    """Decode every ``every``-th frame (or ``fps`` frames per second) of a short video into memory.

    For long videos use :func:`select_video_frames` + :func:`iter_video_images` (streaming).
    """
    refs = select_video_frames(path, every=every, fps=fps, limit=limit)
    return [
        VideoFrame(ref.index, ref.name, img, ref.timestamp_s)
        for ref, (_, img) in zip(refs, iter_video_images(path, [r.index for r in refs]), strict=True)
    ]
