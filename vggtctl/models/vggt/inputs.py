"""Input checks shared by the model and the aggregator: clear errors naming the bad value."""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor

from vggtctl.errors import InputError, UsageError

_SHAPE_HINT = (
    "pass frames as a float tensor [S, 3, H, W] or [B, S, 3, H, W] in [0, 1] (e.g. from load_images)"
)


def validate_images(images: Tensor | np.ndarray, patch_size: int) -> Tensor:
    """Check model input images and return them as ``[B, S, 3, H, W]``.

    Args:
        images: ``[S, 3, H, W]`` or ``[B, S, 3, H, W]`` floating point, values in [0, 1].
        patch_size: H and W must be multiples of it.

    Returns:
        The images as a 5-D tensor (a view when no change was needed).

    Raises:
        InputError: Wrong type, rank, channel count, dtype, empty, size not a multiple of the patch
            size, or non-finite values. Values outside [0, 1] only warn (``UserWarning``).
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, Tensor):
        raise InputError(
            f"images must be a torch tensor or numpy array, got {type(images).__name__}", _SHAPE_HINT
        )
    shape = tuple(images.shape)
    if images.ndim == 4:
        images = images.unsqueeze(0)
    elif images.ndim != 5:
        raise InputError(
            f"images must have rank 4 [S,3,H,W] or 5 [B,S,3,H,W], got rank {len(shape)} {shape}", _SHAPE_HINT
        )
    b, s, c, h, w = images.shape
    if b == 0 or s == 0:
        raise InputError(f"empty frame list: images have shape {shape}", "pass at least one frame")
    if c != 3:
        raise InputError(
            f"images must have 3 colour channels in dim -3, got {c} (shape {shape})", _SHAPE_HINT
        )
    if not images.is_floating_point():
        raise InputError(
            f"images must be floating point in [0, 1], got dtype {images.dtype}",
            "convert uint8 images with images.float() / 255 (load_images does this)",
        )
    if h < patch_size or w < patch_size or h % patch_size or w % patch_size:
        raise InputError(
            f"image size {h}×{w} (H×W) is not a positive multiple of the patch size {patch_size}",
            f"resize or crop to multiples of {patch_size}, e.g. with load_images(paths, mode='crop') (518 wide)",
        )
    lo, hi = (float(v) for v in torch.aminmax(images.detach()))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputError("images contain NaN or infinite values", "check the image loading / preprocessing")
    if lo < 0.0 or hi > 1.0:
        warnings.warn(
            f"image values span [{lo:.4g}, {hi:.4g}], expected [0, 1]: the model normalises with ImageNet "
            "mean/std itself, so pass un-normalised RGB / 255",
            UserWarning,
            stacklevel=3,
        )
    return images


def normalize_layers(layers: Iterable[int], depth: int) -> tuple[int, ...]:
    """Sorted unique aggregator layer indices, each in ``0..depth-1`` (negative counts from the end).

    Raises:
        UsageError: An index outside the range, or no index at all.
    """
    out: set[int] = set()
    for raw in layers:
        i = int(raw)
        j = i + depth if i < 0 else i
        if not 0 <= j < depth:
            raise UsageError(
                f"aggregator layer {i} does not exist (valid: 0..{depth - 1})",
                "DPT heads read (4, 11, 17, 23), the camera head 23, VLN features 22",
            )
        out.add(j)
    if not out:
        raise UsageError("no aggregator layer requested", "request e.g. layers=(23,)")
    return tuple(sorted(out))
