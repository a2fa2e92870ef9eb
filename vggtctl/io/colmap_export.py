"""A COLMAP model of one VGGT prediction: one PINHOLE camera per image, world-to-camera poses, a trackless cloud.

The caller hands over the intrinsics and image sizes in the pixel units it wants (``infer`` converts them to
the original images or keeps the model-input grid); this module only builds and writes the model, so the
same export serves ``infer`` today and the large-scene tools later.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vggtctl.io.colmap import Camera, Image, PointCloud, check_text_names, rotmat_to_qvec, write_model


def build_model(
    extrinsic: np.ndarray,
    intrinsic: np.ndarray,
    sizes_hw: Sequence[tuple[int, int]],
    names: Sequence[str],
) -> tuple[dict[int, Camera], dict[int, Image]]:
    """Cameras and images of a prediction; ids are 1-based and camera ``i`` belongs to image ``i``.

    Args:
        extrinsic: ``[S, 3, 4]`` world-to-camera ``[R|t]`` (OpenCV axes, VGGT's convention).
        intrinsic: ``[S, 3, 3]`` in the pixels of ``sizes_hw``.
        sizes_hw: ``(height, width)`` of each image in those pixels.
        names: image names as COLMAP should find them (relative to its image folder).
    """
    if not len(extrinsic) == len(intrinsic) == len(sizes_hw) == len(names):
        raise ValueError(
            f"{len(extrinsic)} extrinsics, {len(intrinsic)} intrinsics, {len(sizes_hw)} sizes, {len(names)} names"
        )
    cameras: dict[int, Camera] = {}
    images: dict[int, Image] = {}
    for i, ((h, w), name) in enumerate(zip(sizes_hw, names, strict=True)):
        K = np.asarray(intrinsic[i], dtype=np.float64)
        cameras[i + 1] = Camera(
            i + 1, "PINHOLE", int(w), int(h), np.array([K[0, 0], K[1, 1], K[0, 2], K[1, 2]])
        )
        E = np.asarray(extrinsic[i], dtype=np.float64)
        images[i + 1] = Image(i + 1, rotmat_to_qvec(E[:, :3]), E[:, 3].copy(), i + 1, name)
    return cameras, images


def write_prediction_model(
    folder: str | os.PathLike[str],
    extrinsic: np.ndarray,
    intrinsic: np.ndarray,
    sizes_hw: Sequence[tuple[int, int]],
    names: Sequence[str],
    xyz: np.ndarray,
    rgb: np.ndarray,
    fmt: str = "bin",
) -> list[Path]:
    """Write the model of a prediction (see :func:`build_model`) with its points; returns the files.

    Args:
        folder: where ``cameras``/``images``/``points3D`` ``.bin`` or ``.txt`` go.
        xyz: ``[N, 3]`` world points; ``rgb``: ``[N, 3]`` uint8 colours. Point ids are ``1..N`` in this order.
        fmt: ``bin`` (COLMAP's default) or ``txt``.

    Raises:
        InputError: ``txt`` with an image name COLMAP's text reader would change (whitespace).
    """
    if fmt == "txt":
        check_text_names(list(names))  # before any file is written
    cameras, images = build_model(extrinsic, intrinsic, sizes_hw, names)
    cloud = PointCloud(
        np.asarray(xyz, dtype=np.float64).reshape(-1, 3), np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)
    )
    return write_model(folder, cameras, images, cloud, fmt)
