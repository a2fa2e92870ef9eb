"""Frame-causal and streaming VGGT on the tiny model: the stream equals the causal full pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vggtctl.errors import InputError, UsageError
from vggtctl.models.vggt import JANUSVLN_WINDOW, KVWindow, kv_bytes_per_frame
from vggtctl.models.vggt.build import from_state_dict
from vggtctl.models.vggt.config import get_config
from vggtctl.models.vggt.model import VGGT

LAYER = 22


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model is overhead-bound: on a shared CPU more threads only contend
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model(tiny_checkpoint: Path) -> VGGT:
    from safetensors.torch import load_file

    return from_state_dict(get_config("tiny", enable_track=False), load_file(str(tiny_checkpoint)))


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    gen = torch.Generator().manual_seed(7)
    return torch.rand(9, 3, 42, 56, generator=gen)  # 9 frames, a 3×4 patch grid


def causal(model: VGGT, images: torch.Tensor, layers: tuple[int, ...] = (LAYER,)) -> list:
    with torch.inference_mode():
        return model.aggregator(images, layers=layers, causal=True)[0]


def test_streaming_equals_causal_full_pass_for_every_frame(model: VGGT, frames: torch.Tensor) -> None:
    full = causal(model, frames, (4, LAYER))
    stream = model.aggregator.stream(layers=(4, LAYER))
    for t in range(frames.shape[0]):
        out = stream.step(frames[t])
        assert out[0] is None and out[23] is None
        for layer in (4, LAYER):
            assert out[layer].shape == (1, 1, full[layer].shape[2], 128)
            assert rel(out[layer][:, 0], full[layer][:, t]) <= 1e-5, (layer, t)
    assert stream.cached_frames == tuple(range(9))


def test_streaming_a_batch_of_two_sequences(model: VGGT, frames: torch.Tensor) -> None:
    batch = torch.stack((frames[:4], frames[4:8].flip(-1)))
    full = causal(model, batch)
    outs = model.aggregator.stream(layers=(LAYER,)).extend(batch)
    assert rel(torch.cat([o[LAYER] for o in outs], dim=1), full[LAYER]) <= 1e-5


def test_frame0_of_causal_pass_equals_one_frame_pass(model: VGGT, frames: torch.Tensor) -> None:
    full = causal(model, frames)
    with torch.inference_mode():
        one = model.aggregator(frames[:1], layers=(LAYER,))[0]
    assert rel(full[LAYER][:, 0], one[LAYER][:, 0]) <= 1e-5


def test_causal_differs_from_bidirectional_after_frame0(model: VGGT, frames: torch.Tensor) -> None:
    full = causal(model, frames[:4])
    with torch.inference_mode():
        bi = model.aggregator(frames[:4], layers=(LAYER,))[0]
    # Bidirectional frame 0 sees later frames too; every later frame sees a different history.
    for t in range(1, 4):
        assert rel(full[LAYER][:, t], bi[LAYER][:, t]) > 1e-2, t
    # The last frame sees every frame either way, but the tokens it reads were built causally.
    assert rel(full[LAYER][:, 3], bi[LAYER][:, 3]) > 1e-3


def test_reset_starts_a_new_sequence(model: VGGT, frames: torch.Tensor) -> None:
    stream = model.aggregator.stream(layers=(LAYER,))
    stream.extend(frames[:3])
    stream.reset()
    assert stream.cached_frames == () and stream.cache_bytes == 0
    again = torch.cat([o[LAYER] for o in stream.extend(frames[3:6])], dim=1)
    assert rel(again, causal(model, frames[3:6])[LAYER]) <= 1e-5


def test_window_keeps_first_and_most_recent_frames(model: VGGT, frames: torch.Tensor) -> None:
    window = KVWindow(start=2, recent=3)
    assert window.keep(5) == [0, 1, 2, 3, 4]
    assert window.keep(9) == [0, 1, 6, 7, 8]
    assert (JANUSVLN_WINDOW.start, JANUSVLN_WINDOW.recent, JANUSVLN_WINDOW.keep(60)[7:9]) == (8, 48, [7, 12])

    trimmed = model.aggregator.stream(layers=(LAYER,), window=window)
    whole = model.aggregator.stream(layers=(LAYER,))
    seen = []
    for t in range(frames.shape[0]):
        out_t, out_w = trimmed.step(frames[t]), whole.step(frames[t])
        seen.append(trimmed.cached_frames)
        if t <= 5:  # frames 0..5 never attend past a trimmed frame (the first trim follows frame 5)
            assert rel(out_t[LAYER], out_w[LAYER]) <= 1e-6, t
    assert seen[4] == (0, 1, 2, 3, 4)
    assert seen[5] == (0, 1, 3, 4, 5)
    assert seen[8] == (0, 1, 6, 7, 8)
    assert rel(out_t[LAYER], out_w[LAYER]) > 1e-3  # frame 8 no longer sees frames 2..5
    k_t, v_t = trimmed.kv(LAYER)
    k_w, _ = whole.kv(LAYER)
    assert k_t.shape[2] == 5 and v_t.shape[2] == 5 and k_w.shape[2] == 9
    # The first frames' K/V were computed before any trim, so they are the untrimmed stream's.
    assert torch.equal(k_t[:, :, :2], k_w[:, :, :2])


def test_memory_per_cached_frame(model: VGGT, frames: torch.Tensor) -> None:
    stream = model.aggregator.stream(layers=(LAYER,))
    stream.extend(frames[:3])
    tokens = 5 + 3 * 4  # camera + 4 registers + a 3×4 grid
    expected = kv_bytes_per_frame(model.config, tokens, torch.float32, layers=LAYER + 1)
    assert expected == 2 * 23 * tokens * 64 * 4
    assert stream.bytes_per_frame == expected
    assert stream.cache_bytes == 3 * expected
    # JanusVLN's figure: ~151 MiB per frame for VGGT-1B in bf16 at 490×644 (1,615 tokens), all 24 layers.
    one_b = kv_bytes_per_frame(get_config("vggt-1b"), 1615, torch.bfloat16)
    assert round(one_b / 2**20, 1) == 151.4


def test_stream_refuses_a_frame_of_another_size(model: VGGT, frames: torch.Tensor) -> None:
    stream = model.aggregator.stream(layers=(LAYER,))
    stream.step(frames[0])
    with pytest.raises(InputError, match="differs from the stream"):
        stream.step(frames[1, :, :28])
    with pytest.raises(UsageError, match="recent >= 1"):
        KVWindow(start=1, recent=0)


@pytest.mark.gpu
def test_streaming_equals_causal_pass_on_cuda_in_bf16(tiny_checkpoint: Path, frames: torch.Tensor) -> None:
    from vggtctl.services.model_loader import load_model

    gpu = load_model(str(tiny_checkpoint), device="cuda", dtype="bf16")
    images = frames[:5].cuda()
    with torch.inference_mode():
        full = gpu.aggregator(images, layers=(LAYER,), causal=True)[0][LAYER]
    outs = gpu.aggregator.stream(layers=(LAYER,)).extend(images)
    streamed = torch.cat([o[LAYER] for o in outs], dim=1)
    assert streamed.dtype == torch.bfloat16
    assert rel(streamed.float(), full.float()) <= 2e-2
