"""Image loading and preprocessing, numerically identical to the reference
``vggt.utils.load_fn.load_and_preprocess_images``.

The reference: RGBA is composited onto white, then RGB; ``crop`` makes the width ``target_size`` and the
height ``round(h * target / w / 14) * 14`` (Python ``round``: half-to-even), PIL BICUBIC on the uint8
image, ``/255``, then centre-crops rows when the height exceeds ``target_size``; ``pad`` makes the
longer side ``target_size`` and pads with white (1.0) to a square, top/left getting the floor of half
the padding. Images that still differ in shape are padded white (centred the same way) to the largest
height and width. No EXIF rotation is applied (the reference does not either).

Every frame also gets an :class:`~vggtctl.io.image_geometry.ImageGeometry` so model pixels map back to the
user's pixels.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vggtctl.errors import InputError, UsageError
from vggtctl.io.image_geometry import ImageGeometry, intrinsics_to_model, intrinsics_to_original

__all__ = [
    "MODES",
    "PATCH",
    "ImageGeometry",
    "intrinsics_to_model",
    "intrinsics_to_original",
    "load_images",
    "open_image",
    "open_images",
    "preprocess_image",
    "preprocess_images",
    "resized_size",
]

log = logging.getLogger(__name__)

PATCH = 14
MODES = ("crop", "pad")


def resized_size(width: int, height: int, mode: str = "crop", target_size: int = 518) -> tuple[int, int]:
    """Size ``(new_width, new_height)`` of the bicubic resize, exactly as the reference computes it.

    Args:
        width: Original width in pixels.
        height: Original height in pixels.
        mode: ``"crop"`` (width becomes ``target_size``) or ``"pad"`` (the longer side does).
        target_size: The model's input size (518 for VGGT-1B); a multiple of 14.

    Returns:
        The resized width and height; the free side is rounded half-to-even to a multiple of 14.
    """
    if mode == "pad" and height > width:
        new_h = target_size
        new_w = round(width * (new_h / height) / PATCH) * PATCH
    else:
        new_w = target_size
        new_h = round(height * (new_w / width) / PATCH) * PATCH
    return new_w, new_h


def _check_mode(mode: str, target_size: int) -> None:
    if mode not in MODES:
        raise UsageError(f"unknown preprocessing mode {mode!r}", "use --mode crop (default) or --mode pad")
    if target_size <= 0 or target_size % PATCH:
        raise UsageError(
            f"target size {target_size} is not a positive multiple of {PATCH}",
            "use 518 (VGGT-1B) or the img_size of your preset",
        )


def _to_rgb(img: Image.Image) -> Image.Image:
    # Only RGBA is composited (as in the reference); every other mode goes through PIL's convert.
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def _pad_white(arr: np.ndarray, out_h: int, out_w: int) -> tuple[np.ndarray, int, int]:
    """Pad a ``[3,h,w]`` float image with 1.0 to ``out_h x out_w``; returns it with (left, top)."""
    h, w = arr.shape[1:]
    top = (out_h - h) // 2
    left = (out_w - w) // 2
    if out_h == h and out_w == w:
        return arr, 0, 0
    out = np.ones((3, out_h, out_w), dtype=np.float32)
    out[:, top : top + h, left : left + w] = arr
    return out, left, top


def preprocess_image(
    img: Image.Image, mode: str = "crop", target_size: int = 518
) -> tuple[np.ndarray, ImageGeometry]:
    """Preprocess one PIL image to a ``[3,H,W]`` float32 array in [0, 1] and its geometry.

    Args:
        img: Any PIL image (converted as the reference does).
        mode: ``"crop"`` or ``"pad"``.
        target_size: Model input size, a multiple of 14.

    Returns:
        The array and its :class:`ImageGeometry` (before any mixed-size padding).
    """
    _check_mode(mode, target_size)
    img = _to_rgb(img)
    width, height = img.size
    new_w, new_h = resized_size(width, height, mode, target_size)
    if new_w <= 0 or new_h <= 0:
        raise InputError(
            f"image of {width}x{height} pixels becomes {new_w}x{new_h} after resizing",
            "the image is far too thin for the model; crop it or drop it",
        )
    resized = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    # HWC uint8 -> CHW float32 / 255, the same float32 division as torchvision's to_tensor.
    arr = np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
    offset_x, offset_y = 0, 0
    if mode == "crop" and new_h > target_size:
        start = (new_h - target_size) // 2
        arr = np.ascontiguousarray(arr[:, start : start + target_size, :])
        offset_y = -start
    if mode == "pad":
        arr, offset_x, offset_y = _pad_white(arr, target_size, target_size)
    geom = ImageGeometry((height, width), (new_h, new_w), (offset_x, offset_y), (arr.shape[1], arr.shape[2]))
    return arr, geom


def preprocess_images(
    images: Sequence[Image.Image], mode: str = "crop", target_size: int = 518
) -> tuple[np.ndarray, list[ImageGeometry]]:
    """Preprocess PIL images to one ``[S,3,H,W]`` batch, padding mixed shapes white as the reference.

    Args:
        images: The frames, in order.
        mode: ``"crop"`` or ``"pad"``.
        target_size: Model input size, a multiple of 14.

    Returns:
        The batch (float32 in [0, 1]) and one :class:`ImageGeometry` per frame.
    """
    _check_mode(mode, target_size)
    if not images:
        raise InputError("no images to preprocess", "pass image files, a folder of images or a video")
    arrays: list[np.ndarray] = []
    geoms: list[ImageGeometry] = []
    for img in images:
        arr, geom = preprocess_image(img, mode, target_size)
        arrays.append(arr)
        geoms.append(geom)
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        max_h = max(s[0] for s in shapes)
        max_w = max(s[1] for s in shapes)
        log.warning(
            "images have different shapes %s; padding all to %dx%d with white", sorted(shapes), max_h, max_w
        )
        for i, arr in enumerate(arrays):
            arrays[i], left, top = _pad_white(arr, max_h, max_w)
            g = geoms[i]
            geoms[i] = ImageGeometry(
                g.orig_hw, g.resized_hw, (g.offset_xy[0] + left, g.offset_xy[1] + top), (max_h, max_w)
            )
    return np.stack(arrays).astype(np.float32, copy=False), geoms


def open_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image file fully (so the file handle closes), with a clear error for bad files."""
    p = Path(path)
    try:
        with Image.open(p) as img:
            img.load()
            return img
    except FileNotFoundError:
        raise InputError(
            f"image not found: {p}", "check the path; folders are searched for image files"
        ) from None
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(
            f"cannot read image {p}: {e}", "is the file a complete JPEG/PNG/TIFF/WebP image?"
        ) from None


def check_images_readable(items: Sequence[str | os.PathLike[str]]) -> None:
    """Decode every image file once, keeping none; one error lists every file that failed.

    Raises:
        InputError: Some files are missing, empty or not readable images; all of them are named, with why.
    """
    _open_all(items, keep=False)


def open_images(items: Sequence[str | os.PathLike[str] | Image.Image]) -> list[Image.Image]:
    """Open every image file (PIL images pass through); one error lists every file that failed.

    A single bad file gets :func:`open_image`'s own error; several are listed together, each with why.

    Raises:
        InputError: Some files are missing, empty or not readable images; all of them are named, with why.
    """
    return _open_all(items, keep=True)


def _open_all(items: Sequence[str | os.PathLike[str] | Image.Image], *, keep: bool) -> list[Image.Image]:
    opened: list[Image.Image] = []
    bad: list[tuple[str, InputError]] = []
    for item in items:
        if isinstance(item, Image.Image):
            opened.append(item)
            continue
        p = Path(item)
        if p.is_file() and p.stat().st_size == 0:
            error = InputError(f"cannot read image {p}: empty file (0 bytes)", "is the file complete?")
            bad.append((f"{p} (empty file, 0 bytes)", error))
            continue
        try:
            image = open_image(p)
            if keep:
                opened.append(image)
        except InputError as e:
            bad.append((f"{p} ({'not found' if not p.exists() else _short_reason(e.message, p)})", e))
    if len(bad) == 1:
        raise bad[0][1]
    if bad:
        shown = "; ".join(b[0] for b in bad[:10]) + (f"; and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise InputError(
            f"{len(bad)} of {len(items)} images cannot be read: {shown}",
            "replace or remove those files (a complete JPEG/PNG/TIFF/WebP image each), then run again",
        )
    return opened


def _short_reason(message: str, path: Path) -> str:
    prefix = f"cannot read image {path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def load_images(
    paths: Sequence[str | os.PathLike[str]], mode: str = "crop", target_size: int = 518
) -> tuple[np.ndarray, list[ImageGeometry]]:
    """Load and preprocess image files exactly as the reference ``load_and_preprocess_images``.

    Args:
        paths: Image files, in frame order.
        mode: ``"crop"`` (width := target, centre-crop tall images) or ``"pad"`` (white square).
        target_size: Model input size (518 for VGGT-1B).

    Returns:
        ``[S,3,H,W]`` float32 in [0, 1] and one :class:`ImageGeometry` per frame.

    Raises:
        InputError: A file is missing or not a readable image.
        UsageError: Unknown mode or a target size that is not a multiple of 14.
    """
    return preprocess_images(open_images(paths), mode, target_size)
