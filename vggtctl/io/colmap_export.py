"""A COLMAP model of one VGGT prediction: one PINHOLE camera per image, world-to-camera poses, points with tracks.

The caller hands over the intrinsics, image sizes and 2-D observations in the pixel units it wants (``infer``
converts them to the original images or keeps the model-input grid); this module only builds and writes the
model, so the same export serves ``infer``, ``colmap refine`` and the large-scene tools.
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
    observations: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    error: np.ndarray | None = None,
) -> list[Path]:
    """Write the model of a prediction (see :func:`build_model`) with its points; returns the files.

    Args:
        folder: where ``cameras``/``images``/``points3D`` ``.bin`` or ``.txt`` go.
        xyz: ``[N, 3]`` world points; ``rgb``: ``[N, 3]`` uint8 colours. Point ids are ``1..N`` in this order.
        fmt: ``bin`` (COLMAP's default) or ``txt``.
        observations: ``(point [M], frame [M], xy [M, 2])``: point ``point[k]`` (0-based) seen in frame
            ``frame[k]`` (0-based) at pixel ``xy[k]`` (the units of ``intrinsic``). ``None``: no tracks.
        error: ``[N]`` mean reprojection error per point (0 when ``None``).

    Raises:
        InputError: ``txt`` with an image name COLMAP's text reader would change (whitespace).
    """
    if fmt == "txt":
        check_text_names(list(names))  # before any file is written
    cameras, images = build_model(extrinsic, intrinsic, sizes_hw, names)
    cloud = PointCloud(
        np.asarray(xyz, dtype=np.float64).reshape(-1, 3),
        np.asarray(rgb, dtype=np.uint8).reshape(-1, 3),
        error,
    )
    if observations is not None:
        attach_tracks(images, cloud, *observations)
    return write_model(folder, cameras, images, cloud, fmt)


def attach_tracks(
    images: dict[int, Image], cloud: PointCloud, point: np.ndarray, frame: np.ndarray, xy: np.ndarray
) -> None:
    """Fill each image's ``xys``/``point3D_ids`` and the cloud's tracks from flat observations.

    Image ``i + 1`` holds frame ``i``'s observations ordered by point; point ``j``'s track lists
    ``(image id, index into that image's xys)`` ordered by image.
    """
    point = np.asarray(point, dtype=np.int64)
    frame = np.asarray(frame, dtype=np.int64)
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if not len(point) == len(frame) == len(xy):
        raise ValueError(f"{len(point)} points, {len(frame)} frames, {len(xy)} pixels in the observations")
    if len(point) and (
        point.min() < 0 or point.max() >= len(cloud) or frame.min() < 0 or frame.max() >= len(images)
    ):
        raise ValueError("observations refer to points or frames that are not in the model")
    by_image = np.lexsort((point, frame))
    counts = np.bincount(frame, minlength=len(images))
    starts = np.concatenate([[0], np.cumsum(counts)])
    idx2d = np.empty(len(point), dtype=np.int64)
    idx2d[by_image] = np.arange(len(point)) - starts[frame[by_image]]
    for i in range(len(images)):
        rows = by_image[starts[i] : starts[i + 1]]
        images[i + 1].xys = xy[rows]
        images[i + 1].point3D_ids = point[rows] + cloud.first_id
    by_point = np.lexsort((frame, point))
    cloud.track_offsets = np.concatenate([[0], np.cumsum(np.bincount(point, minlength=len(cloud)))])
    cloud.track_image_ids = (frame[by_point] + 1).astype(np.int32)
    cloud.track_point2D_idxs = idx2d[by_point].astype(np.int32)
