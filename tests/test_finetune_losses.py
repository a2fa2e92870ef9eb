"""The pieces of the fine-tuning recipe with known numbers: GT normalization, loss terms, schedule, sample order."""

from __future__ import annotations

import math

import pytest
import torch

from vggtctl.models.vggt.geometry import extri_intri_to_pose_encoding
from vggtctl.services.finetune.config import DataSettings, LossSettings
from vggtctl.services.finetune.data import SampleStream, augment
from vggtctl.services.finetune.losses import camera_loss, normalize_ground_truth, objective, regression_terms
from vggtctl.services.finetune.worker import lr_factor


def _rot(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _batch(h: int = 8, w: int = 10) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ext = torch.zeros(1, 2, 3, 4)
    ext[0, 0, :, :3], ext[0, 0, :, 3] = _rot(0.3), torch.tensor([0.5, -0.2, 1.0])
    ext[0, 1, :, :3], ext[0, 1, :, 3] = _rot(-0.1), torch.tensor([-0.4, 0.1, 2.0])
    intr = torch.tensor([[12.0, 0, w / 2], [0, 12.0, h / 2], [0, 0, 1]]).expand(1, 2, 3, 3).clone()
    depth = 2 + torch.rand(1, 2, h, w, generator=g) * 3
    valid = torch.rand(1, 2, h, w, generator=g) > 0.2
    return {"depth": depth * valid, "valid": valid, "intrinsics": intr, "extrinsics": ext}


def test_normalization_puts_frame0_at_identity_with_unit_mean_distance() -> None:
    gt = normalize_ground_truth(_batch())
    torch.testing.assert_close(gt["extrinsics"][0, 0], torch.eye(4)[:3], atol=1e-6, rtol=0)
    dist = gt["world_points"].norm(dim=-1)[gt["valid"]]
    assert dist.mean().item() == pytest.approx(1.0, rel=1e-5)
    # frame 0's points in its own camera frame: z is its depth
    torch.testing.assert_close(gt["world_points"][0, 0, ..., 2], gt["depth"][0, 0], atol=1e-6, rtol=0)
    # the relative rotation of frame 1 is R1 R0^T, the translation scaled by 1/s
    rel_r = _rot(-0.1) @ _rot(0.3).T
    torch.testing.assert_close(gt["extrinsics"][0, 1, :, :3], rel_r, atol=1e-5, rtol=0)


def test_camera_loss_is_zero_at_the_truth_and_weights_iterations() -> None:
    gt = normalize_ground_truth(_batch())
    target = extri_intri_to_pose_encoding(gt["extrinsics"], gt["intrinsics"], (8, 10))
    assert camera_loss([target, target], gt, 0.6).item() == pytest.approx(0.0, abs=1e-7)
    off = target.clone()
    off[..., :3] += 0.1  # translation error 0.1 per component, nothing else
    # two iterations: (0.6 * 0.1 + 1.0 * 0.1) / 2
    assert camera_loss([off, off], gt, 0.6).item() == pytest.approx(0.08, rel=1e-5)


def test_confidence_term_matches_its_formula() -> None:
    pred = torch.full((1, 1, 4, 4, 1), 2.0)
    target = torch.full((1, 1, 4, 4, 1), 1.5)
    conf = torch.full((1, 1, 4, 4), 3.0)
    valid = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    c, r, g = regression_terms(pred, conf, target, valid, LossSettings(conf_alpha=0.2))
    assert c.item() == pytest.approx(0.5 * 3.0 - 0.2 * math.log(3.0), rel=1e-6)
    assert r.item() == pytest.approx(0.5, rel=1e-6)
    assert g.item() == pytest.approx(0.0, abs=1e-7)  # a constant residual has no gradient


def test_objective_weights_the_terms() -> None:
    batch = _batch()
    gt = normalize_ground_truth(batch)
    target = extri_intri_to_pose_encoding(gt["extrinsics"], gt["intrinsics"], (8, 10))
    preds = {
        "pose_enc_list": [target + 0.05],
        "depth": (gt["depth"] * 1.1)[..., None],
        "depth_conf": torch.full(gt["depth"].shape, 2.0),
    }
    settings = LossSettings()
    out = objective(preds, batch, settings)
    depth_part = out["loss_conf_depth"] + out["loss_reg_depth"] + out["loss_grad_depth"]
    want = settings.camera_weight * out["loss_camera"] + settings.depth_weight * depth_part
    assert out["loss_objective"].item() == pytest.approx(want.item(), rel=1e-6)


def test_schedule_warms_up_then_decays_to_min_lr() -> None:
    f = [lr_factor(s, 100, 0.1, 1e-4, 1e-6) for s in range(101)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0) and f[100] == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))


def test_two_ranks_see_the_global_batch_of_one() -> None:
    items = list(range(10))
    one = SampleStream(items, 3, 0, 1, 2)
    ranks = [SampleStream(items, 3, r, 2, 1) for r in (0, 1)]
    for _ in range(7):  # crosses an epoch
        e, both = one.next()
        parts = [s.next() for s in ranks]
        assert all(p[0] == e for p in parts)
        assert sorted(parts[0][1] + parts[1][1]) == sorted(both)
    state = one.state_dict()
    again = SampleStream(items, 3, 0, 1, 2)
    again.load_state_dict(state)
    assert again.next() == one.next()


def test_augmentation_is_off_by_default_and_shifts_intrinsics_when_cropping() -> None:
    batch = {
        "images": torch.rand(1, 2, 3, 28, 56),
        "depth": torch.rand(1, 2, 28, 56),
        "valid": torch.ones(1, 2, 28, 56, dtype=torch.bool),
        "intrinsics": torch.tensor([[30.0, 0, 28], [0, 30, 14], [0, 0, 1]]).expand(1, 2, 3, 3).clone(),
    }
    same = augment(batch, DataSettings(), torch.Generator().manual_seed(0))
    assert all(torch.equal(same[k], batch[k]) for k in batch)
    cropped = augment(batch, DataSettings(aspect_crop=0.49), torch.Generator().manual_seed(1))
    w = cropped["images"].shape[-1]
    assert w % 14 == 0 and w < 56 and cropped["depth"].shape[-1] == w
    left = 28 - cropped["intrinsics"][0, 0, 0, 2].item()
    torch.testing.assert_close(cropped["depth"], batch["depth"][..., int(left) : int(left) + w])
