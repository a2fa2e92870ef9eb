"""The VLN model: the 2x2 regroup, the fusion (exactly λ·merger at image positions) and which parameters learn."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.vln_fixtures import tiny_qwen, trajectories  # noqa: F401 - fixtures
from vggtctl.errors import InputError
from vggtctl.services.vln.fusion import regroup


def test_regroup_orders_blocks_as_qwens_merger() -> None:
    # token value = its (row, col) on a 3x4 grid; the odd last row is cropped
    h, w = 3, 4
    tokens = torch.tensor([[r * 10 + c] for r in range(h) for c in range(w)], dtype=torch.float32)
    blocks = regroup(tokens, h, w)
    assert blocks.shape == (2, 4, 1)
    assert blocks[..., 0].tolist() == [[0, 1, 10, 11], [2, 3, 12, 13]]
    with pytest.raises(InputError, match="do not fill"):
        regroup(tokens[:5], h, w)


@pytest.fixture(scope="module")
def parts(tiny_qwen: Path, trajectories: Path, tiny_checkpoint: Path):
    from transformers import AutoImageProcessor, AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    from vggtctl.services.model_loader import load_model
    from vggtctl.services.vln.dataset import VlnDataset, collate
    from vggtctl.services.vln.records import read_records
    from vggtctl.services.vln.train import batch_spatial

    tok = AutoTokenizer.from_pretrained(tiny_qwen)
    ds = VlnDataset(read_records(trajectories), tok, AutoImageProcessor.from_pretrained(tiny_qwen), 112)
    batch = collate([ds[1], ds[6]], tok.pad_token_id)  # 2 and 3 images: padded, different image counts
    vggt = load_model(str(tiny_checkpoint))
    spatial = batch_spatial(vggt, batch, 22)
    qwen = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_qwen)
    return qwen, batch, spatial


def _model(qwen, tile: bool = True):  # type: ignore[no-untyped-def]
    from vggtctl.services.vln.model import VlnModel

    torch.manual_seed(0)
    return VlnModel(qwen, context_dim=128, merger_hidden=32, lam=0.2, tile=tile)


@pytest.mark.parametrize("tile", [True, False])
def test_fusion_adds_lambda_times_merger_at_image_positions_only(parts, tile: bool) -> None:  # type: ignore[no-untyped-def]
    qwen, b, spatial = parts
    model = _model(qwen, tile)
    with torch.no_grad():
        plain = model.inputs_embeds(b.input_ids, b.pixel_values, b.image_grid_thw, b.images_per_sample, None)
        fused = model.inputs_embeds(
            b.input_ids, b.pixel_values, b.image_grid_thw, b.images_per_sample, spatial
        )
        merged = model.merged_spatial(spatial)
    diff = fused - plain
    image = b.input_ids == model.image_token_id
    assert float(diff[~image].abs().max()) == 0.0  # text and padding untouched
    assert merged[0].shape == (12, 32)  # a 6x8 VGGT grid -> 12 blocks -> LLM width 32
    for i, k in enumerate(b.images_per_sample):
        got = diff[i][image[i]].reshape(k, 12, 32)
        for n in range(k):
            want = 0.2 * merged[i] if (tile or n == k - 1) else torch.zeros_like(merged[i])
            torch.testing.assert_close(got[n], want, rtol=1e-5, atol=1e-6)
    assert float(merged[0].abs().max()) > 0  # the check above is not comparing zeros


def test_only_the_chosen_groups_receive_gradients(parts) -> None:  # type: ignore[no-untyped-def]
    from vggtctl.services.vln.model import TrainGroups

    qwen, b, spatial = parts
    model = _model(qwen)
    for groups in (TrainGroups(), TrainGroups(llm=False, qwen_merger=False)):
        model.set_trainable(groups)
        model.zero_grad(set_to_none=True)
        out = model(b.input_ids, b.attention_mask, b.pixel_values, b.image_grid_thw, b.images_per_sample,
                    spatial, labels=b.labels)  # fmt: skip
        out.loss.backward()
        got = {n for n, p in model.named_parameters() if p.grad is not None and float(p.grad.abs().sum()) > 0}
        want = {n for n, p in model.named_parameters() if p.requires_grad}
        assert got == want
        assert not any("visual.blocks" in n or "patch_embed" in n for n in got)  # the ViT stays frozen
        assert any(n.startswith("vggt_merger.") for n in got)
        assert any("language_model" in n for n in got) == groups.llm
        assert any("visual.merger" in n for n in got) == groups.qwen_merger
    model.set_trainable(TrainGroups())


def test_mismatched_3d_tokens_are_refused(parts) -> None:  # type: ignore[no-untyped-def]
    from vggtctl.services.vln.model import Spatial

    qwen, b, spatial = parts
    model = _model(qwen)
    small = [Spatial(s.tokens.reshape(6, 8, -1)[:4].reshape(32, -1), 4, 8) for s in spatial]
    with pytest.raises(InputError, match="LLM tokens but its 3D features give 8"):
        model.inputs_embeds(b.input_ids, b.pixel_values, b.image_grid_thw, b.images_per_sample, small)


def test_a_tied_lm_head_is_one_parameter_of_the_optimizer(tmp_path: Path) -> None:
    from transformers import Qwen2_5_VLForConditionalGeneration

    from vggtctl.services.vln.config import VlnTrainConfig
    from vggtctl.services.vln.model import TrainGroups
    from vggtctl.services.vln.tiny_qwen import write_tiny_qwen
    from vggtctl.services.vln.train import param_groups

    path = write_tiny_qwen(tmp_path / "q", tie_embeddings=True).path
    qwen = Qwen2_5_VLForConditionalGeneration.from_pretrained(path)
    assert qwen.lm_head.weight is qwen.get_input_embeddings().weight  # as in Qwen2.5-VL-3B
    model = _model(qwen)
    model.set_trainable(TrainGroups())
    groups = param_groups(model, VlnTrainConfig(data="x"))
    listed = [id(p) for g in groups for p in g["params"]]
    assert len(listed) == len(set(listed))  # torch and DeepSpeed refuse a parameter given twice
    assert set(listed) == {id(p) for p in model.parameters() if p.requires_grad}
    torch.optim.AdamW(groups)  # takes them without a duplicate-parameter warning or error
