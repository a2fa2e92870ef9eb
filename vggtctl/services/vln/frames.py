"""One preprocessing for both encoders: each frame is decoded once, resized once, and both VGGT and Qwen
see the same pixels.

Frames go through :func:`vggtctl.data.preprocess.preprocess_image` in ``crop`` mode at width
``image_width`` (644 by default: a 640×480 frame becomes 490×644, VGGT's 35×46 patch grid). Qwen gets the
same tensor cropped to the top-left multiple of 28 pixels (476×644: a 34×46 patch grid, 17×23 = 391 LLM
tokens), and the VGGT features are cropped to the same 34×46 grid before the 2×2 regroup, so token k of
Qwen's image and token k of the VGGT merger describe the same 28×28 pixels.

A small per-process LRU keeps decoded frames: consecutive samples of an episode share most of their
history, so a worker that gets them decodes each PNG once.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from vggtctl.data.preprocess import open_image, preprocess_image

QWEN_UNIT = 28
"""Qwen2.5-VL's pixel unit: patch 14 × spatial merge 2."""


def qwen_crop(frame: np.ndarray) -> np.ndarray:
    """The top-left ``[3, 28·⌊H/28⌋, 28·⌊W/28⌋]`` of a ``[3, H, W]`` frame (what Qwen's ViT sees)."""
    h = frame.shape[1] // QWEN_UNIT * QWEN_UNIT
    w = frame.shape[2] // QWEN_UNIT * QWEN_UNIT
    return frame[:, :h, :w]


class FrameCache:
    """Decoded, preprocessed frames by path, least recently used dropped first.

    Args:
        width: Target width of the ``crop`` preprocessing (a multiple of 14).
        capacity: Frames kept (a 490×644 float32 frame is 3.8 MB).
    """

    def __init__(self, width: int, capacity: int = 32) -> None:
        self.width = width
        self.capacity = capacity
        self._frames: OrderedDict[Path, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, path: Path) -> np.ndarray:
        """The ``[3, H, W]`` float32 frame in [0, 1] of ``path``."""
        frame = self._frames.get(path)
        if frame is not None:
            self._frames.move_to_end(path)
            self.hits += 1
            return frame
        self.misses += 1
        frame, _ = preprocess_image(open_image(path), "crop", self.width)
        self._frames[path] = frame
        if len(self._frames) > self.capacity:
            self._frames.popitem(last=False)
        return frame
