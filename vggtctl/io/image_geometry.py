"""How an original image became a model input frame (:class:`ImageGeometry`), and its intrinsics maps.

A plain record with no dependency above numpy: preprocessing (``vggtctl.data.preprocess``) produces it,
the files under ``io/`` (``predictions.npz``, COLMAP models) store it, and the data layer carries it per
frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ImageGeometry:
    """How one original image became one model input frame.

    Coordinates use the pixel-corner convention (pixel ``(0, 0)`` spans ``[0, 1) x [0, 1)``), so
    ``model_xy = original_xy * scale_xy + offset_xy`` holds exactly for a PIL resize.

    Attributes:
        orig_hw: Height and width of the original image.
        resized_hw: Height and width after the bicubic resize (before crop or pad).
        offset_xy: Where the resized image's top-left corner lies in the model frame: negative when
            rows were cropped away, positive when white padding was added on the top/left.
        out_hw: Height and width of the model input frame.
    """

    orig_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    offset_xy: tuple[int, int]
    out_hw: tuple[int, int]

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Model pixels per original pixel along x and y."""
        return (self.resized_hw[1] / self.orig_hw[1], self.resized_hw[0] / self.orig_hw[0])

    def to_model(self, xy: np.ndarray) -> np.ndarray:
        """Map original pixel coordinates ``[..., 2]`` to model-frame pixel coordinates."""
        xy = np.asarray(xy, dtype=np.float64)
        return xy * np.array(self.scale_xy) + np.array(self.offset_xy, dtype=np.float64)

    def to_original(self, xy: np.ndarray) -> np.ndarray:
        """Map model-frame pixel coordinates ``[..., 2]`` back to original pixel coordinates."""
        xy = np.asarray(xy, dtype=np.float64)
        return (xy - np.array(self.offset_xy, dtype=np.float64)) / np.array(self.scale_xy)


def intrinsics_to_model(K: np.ndarray, geom: ImageGeometry) -> np.ndarray:
    """Convert a 3x3 intrinsic matrix from original pixels to model-frame pixels (pixel-corner convention).

    Args:
        K: Intrinsics of the original image (``[..., 3, 3]``).
        geom: The frame's geometry.

    Returns:
        The intrinsics of the model input frame (float64).
    """
    sx, sy = geom.scale_xy
    ox, oy = geom.offset_xy
    A = np.array([[sx, 0.0, ox], [0.0, sy, oy], [0.0, 0.0, 1.0]])
    return A @ np.asarray(K, dtype=np.float64)


def intrinsics_to_original(K: np.ndarray, geom: ImageGeometry) -> np.ndarray:
    """Convert a 3x3 intrinsic matrix from model-frame pixels back to original pixels.

    Args:
        K: Intrinsics in model-frame pixels (e.g. VGGT's, ``cx = W/2``), ``[..., 3, 3]``.
        geom: The frame's geometry.

    Returns:
        The intrinsics of the original image (float64).
    """
    sx, sy = geom.scale_xy
    ox, oy = geom.offset_xy
    A_inv = np.array([[1.0 / sx, 0.0, -ox / sx], [0.0, 1.0 / sy, -oy / sy], [0.0, 0.0, 1.0]])
    return A_inv @ np.asarray(K, dtype=np.float64)
