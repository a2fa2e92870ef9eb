"""Preprocessing against hand-computed cases of the reference ``load_and_preprocess_images``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vggtctl.data.preprocess import (
    ImageGeometry,
    intrinsics_to_model,
    intrinsics_to_original,
    load_images,
    preprocess_images,
    resized_size,
)
from vggtctl.errors import InputError, UsageError


def _noise(w: int, h: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = len(mode)
    return Image.fromarray(rng.integers(0, 256, (h, w, channels), dtype=np.uint8), mode)


def _save(tmp_path: Path, name: str, img: Image.Image) -> Path:
    p = tmp_path / name
    img.save(p)
    return p


@pytest.mark.parametrize(
    ("w", "h", "mode", "expected"),
    [
        (640, 480, "crop", (518, 392)),  # 4:3 -> 518x392 (388.5/14 = 27.75 -> 28)
        (480, 640, "crop", (518, 686)),  # portrait: width 518, then cropped to 518 rows
        (518, 518, "crop", (518, 518)),
        (640, 480, "pad", (518, 392)),
        (480, 640, "pad", (392, 518)),  # longer side (height) becomes 518
        (74, 5, "crop", (518, 28)),  # 5*7/14 = 2.5 -> 2 (half-to-even; half-up would give 42)
        (74, 7, "crop", (518, 56)),  # 3.5 -> 4
        (74, 9, "crop", (518, 56)),  # 4.5 -> 4
        (74, 11, "crop", (518, 84)),  # 5.5 -> 6
        (5, 74, "pad", (28, 518)),  # the same rounding on the width in pad mode
    ],
)
def test_resized_size_hand_cases(w: int, h: int, mode: str, expected: tuple[int, int]) -> None:
    assert resized_size(w, h, mode) == expected


def test_crop_landscape_4_3_pixels_equal_pil_bicubic_over_255() -> None:
    img = _noise(640, 480)
    batch, (geom,) = preprocess_images([img], "crop")
    assert batch.shape == (1, 3, 392, 518) and batch.dtype == np.float32
    expected = (
        np.asarray(img.resize((518, 392), Image.Resampling.BICUBIC)).transpose(2, 0, 1).astype(np.float32)
        / 255
    )
    np.testing.assert_array_equal(batch[0], expected)
    assert geom == ImageGeometry((480, 640), (392, 518), (0, 0), (392, 518))


def test_crop_portrait_is_centre_cropped_to_square() -> None:
    img = _noise(480, 640, seed=1)
    batch, (geom,) = preprocess_images([img], "crop")
    assert batch.shape == (1, 3, 518, 518)
    full = (
        np.asarray(img.resize((518, 686), Image.Resampling.BICUBIC)).transpose(2, 0, 1).astype(np.float32)
        / 255
    )
    start = (686 - 518) // 2  # 84
    np.testing.assert_array_equal(batch[0], full[:, start : start + 518])
    assert geom.offset_xy == (0, -84) and geom.resized_hw == (686, 518) and geom.out_hw == (518, 518)


def test_pad_mode_pads_white_top_left_floor() -> None:
    img = Image.new("RGB", (640, 480), (0, 0, 0))
    batch, (geom,) = preprocess_images([img], "pad")
    assert batch.shape == (1, 3, 518, 518)
    # 518 - 392 = 126 rows of padding: 63 on top, 63 at the bottom, value 1.0 (white).
    assert np.all(batch[0, :, :63] == 1.0) and np.all(batch[0, :, 63 + 392 :] == 1.0)
    assert np.all(batch[0, :, 63 : 63 + 392] == 0.0)
    assert geom.offset_xy == (0, 63)
    # Odd padding: 518 - 28 = 490 -> 245 left, 245 right; a 5x74 image -> 28x518.
    batch2, (g2,) = preprocess_images([Image.new("RGB", (5, 74), (0, 0, 0))], "pad")
    assert g2.resized_hw == (518, 28) and g2.offset_xy == (245, 0)
    assert np.all(batch2[0, :, :, :245] == 1.0) and np.all(batch2[0, :, :, 245:273] == 0.0)


def test_rgba_is_composited_on_white() -> None:
    transparent = Image.new("RGBA", (140, 140), (255, 0, 0, 0))
    half = Image.new("RGBA", (140, 140), (0, 0, 0, 128))
    batch, _ = preprocess_images([transparent, half], "crop")
    assert np.all(batch[0] == 1.0)  # fully transparent red -> white
    # black at alpha 128/255 over white: 255 * (1 - 128/255) = 127
    np.testing.assert_allclose(batch[1], 127 / 255, atol=1.0 / 255)


def test_mixed_sizes_are_padded_white_to_the_largest() -> None:
    land = Image.new("RGB", (640, 480), (0, 0, 0))  # -> 392x518
    port = Image.new("RGB", (480, 640), (0, 0, 0))  # -> 518x518
    batch, geoms = preprocess_images([land, port], "crop")
    assert batch.shape == (2, 3, 518, 518)
    assert (
        np.all(batch[0, :, :63] == 1.0)
        and np.all(batch[0, :, 63:455] == 0.0)
        and np.all(batch[0, :, 455:] == 1.0)
    )
    assert np.all(batch[1] == 0.0)
    assert geoms[0].offset_xy == (0, 63) and geoms[0].out_hw == (518, 518)
    assert geoms[1].offset_xy == (0, -84)


def test_geometry_maps_pixels_and_intrinsics_both_ways() -> None:
    _, (g,) = preprocess_images([Image.new("RGB", (480, 640))], "crop")
    # Centre of the original portrait image lands on the centre of the 518x518 crop.
    np.testing.assert_allclose(g.to_model(np.array([240.0, 320.0])), [259.0, 259.0])
    np.testing.assert_allclose(g.to_original(np.array([259.0, 259.0])), [240.0, 320.0])
    K = np.array([[500.0, 0, 240.0], [0, 500.0, 320.0], [0, 0, 1]])
    Km = intrinsics_to_model(K, g)
    s = 518 / 480
    np.testing.assert_allclose(Km, [[500 * s, 0, 259.0], [0, 500 * (686 / 640), 259.0], [0, 0, 1]])
    np.testing.assert_allclose(intrinsics_to_original(Km, g), K)


def test_load_images_from_files_matches_in_memory(tmp_path: Path) -> None:
    a = _save(tmp_path, "a.png", _noise(300, 200, seed=2))
    b = _save(tmp_path, "b.png", _noise(300, 200, seed=3, mode="RGBA"))
    batch, geoms = load_images([a, b])
    ref, _ = preprocess_images([Image.open(a), Image.open(b)])
    np.testing.assert_array_equal(batch, ref)
    assert batch.shape == (2, 3, 350, 518)  # 200*518/300/14 = 24.67 -> 25 -> 350
    assert [g.orig_hw for g in geoms] == [(200, 300), (200, 300)]


def test_bad_inputs_raise_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot read image"):
        load_images([bad])
    with pytest.raises(InputError, match="image not found"):
        load_images([tmp_path / "missing.png"])
    with pytest.raises(UsageError, match="unknown preprocessing mode"):
        preprocess_images([Image.new("RGB", (14, 14))], "stretch")
    with pytest.raises(UsageError, match="multiple of 14"):
        preprocess_images([Image.new("RGB", (14, 14))], "crop", target_size=500)
