"""Structural behaviour of the tiny VGGT: batch invariance, the frame-0 role, chunking, layer selection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vggtctl.models.vggt.build import from_state_dict
from vggtctl.models.vggt.config import get_config
from vggtctl.models.vggt.model import VGGT

DENSE = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.fixture(scope="module")
def model(tiny_checkpoint: Path) -> VGGT:
    from safetensors.torch import load_file

    return from_state_dict(get_config("tiny", enable_track=False), load_file(str(tiny_checkpoint)))


@pytest.fixture(scope="module")
def frames(tiny_reference: dict[str, np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(tiny_reference["input_images"])  # [3, 3, 140, 210]


def run(model: VGGT, images: torch.Tensor) -> dict:
    with torch.inference_mode():
        return model(images)


def test_batch_of_two_equals_two_single_runs(model: VGGT, frames: torch.Tensor) -> None:
    other = frames.flip(-1).roll(1, dims=0)  # a different sequence of the same size
    both = run(model, torch.stack([frames, other]))
    first, second = run(model, frames), run(model, other)
    for key in DENSE:
        assert both[key].shape[0] == 2
        assert rel(both[key][:1], first[key]) < 1e-5, key
        assert rel(both[key][1:], second[key]) < 1e-5, key
    assert rel(both["depth"][:1], both["depth"][1:]) > 1e-2  # the two sequences really differ


def test_permuting_frames_after_the_first_permutes_outputs(model: VGGT, frames: torch.Tensor) -> None:
    base = run(model, frames)
    perm = [0, 2, 1]
    permuted = run(model, frames[perm])
    for key in DENSE:
        assert rel(permuted[key], base[key][:, perm]) < 1e-5, key


def test_frame_zero_is_the_reference_frame(model: VGGT, frames: torch.Tensor) -> None:
    base = run(model, frames)
    # Swapping frame 0 with frame 1 changes the prediction for frame 2 (its inputs are the same set,
    # but frame 0 carries the first-frame camera/register tokens and defines the world frame).
    swapped = run(model, frames[[1, 0, 2]])
    assert rel(swapped["world_points"][:, 2], base["world_points"][:, 2]) > 1e-4
    assert rel(swapped["pose_enc"][:, 2], base["pose_enc"][:, 2]) > 1e-4
    # Only slot 0 of the special tokens is the first frame's: changing slot 1 leaves a 1-frame run alone.
    single = run(model, frames[:1])
    token = model.aggregator.camera_token
    saved = token.detach().clone()
    try:
        with torch.no_grad():
            # Not a constant shift: LayerNorm would cancel that.
            token[:, 1] += torch.linspace(-1.0, 1.0, token.shape[-1])
        after_single = run(model, frames[:1])
        assert torch.equal(after_single["pose_enc"], single["pose_enc"])
        assert torch.equal(after_single["depth"], single["depth"])
        assert rel(run(model, frames)["pose_enc"][:, 1:], base["pose_enc"][:, 1:]) > 1e-3
    finally:
        with torch.no_grad():
            token.copy_(saved)


def test_rank4_input_equals_rank5(model: VGGT, frames: torch.Tensor) -> None:
    a, b = run(model, frames), run(model, frames[None])
    for key in DENSE:
        assert torch.equal(a[key], b[key])


def test_dpt_chunking_gives_the_same_result(model: VGGT, frames: torch.Tensor) -> None:
    with torch.inference_mode():
        tokens, start = model.aggregator(frames, layers=(4, 11, 17, 23))
        images = frames[None]
        whole = model.depth_head(tokens, images, start, frames_chunk_size=0)
        chunked = model.depth_head(tokens, images, start, frames_chunk_size=2)
        single = model.point_head(tokens, images, start, frames_chunk_size=1)
        all_points = model.point_head(tokens, images, start, frames_chunk_size=8)
    assert rel(chunked[0], whole[0]) < 1e-5 and rel(chunked[1], whole[1]) < 1e-5
    assert rel(single[0], all_points[0]) < 1e-5


def test_only_requested_layers_are_computed_and_kept(model: VGGT, frames: torch.Tensor) -> None:
    calls: list[int] = []
    hooks = [
        blk.register_forward_hook(lambda m, i, o, idx=idx: calls.append(idx))
        for idx, blk in enumerate(model.aggregator.global_blocks)
    ]
    try:
        with torch.inference_mode():
            full, _ = model.aggregator(frames, layers=range(24))
            calls.clear()
            vln, _ = model.aggregator(frames, layers=(22,))
    finally:
        for h in hooks:
            h.remove()
    assert calls == list(range(23))  # blocks 0..22 ran, block 23 never did
    assert [i for i, t in enumerate(vln) if t is not None] == [22]
    assert torch.equal(vln[22], full[22])
    assert vln[22].shape == (1, 3, 5 + 10 * 15, 128)
    # Negative indices count from the end.
    with torch.inference_mode():
        last, _ = model.aggregator(frames, layers=(-1,))
    assert torch.equal(last[23], full[23])


def test_heads_request_only_what_they_read(model: VGGT) -> None:
    assert model.required_layers() == (4, 11, 17, 23)
    camera_only = VGGT(get_config("tiny", enable_depth=False, enable_point=False, enable_track=False))
    assert camera_only.required_layers() == (23,)
