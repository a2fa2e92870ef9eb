"""train-vln data: the history rule, JSON/JSONL and trajectory records, the prompt and its labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.vln_fixtures import tiny_qwen, trajectories  # noqa: F401 - fixtures
from vggtctl.errors import InputError
from vggtctl.services.vln.prompt import ACTIONS, IGNORE, action_from_filename
from vggtctl.services.vln.records import history_indices, read_records


def test_history_rule_matches_janusvln_linspace() -> None:
    assert history_indices(0) == [0]
    assert history_indices(8) == list(range(9))
    for step in (9, 10, 17, 33, 100, 613):
        assert history_indices(step) == np.linspace(0, step, 9, dtype=int).tolist()
        assert len(history_indices(step)) == 9


def test_action_is_read_from_the_frame_name() -> None:
    assert action_from_filename("step_0012_move_forward.png") == "MOVE_FORWARD"
    assert action_from_filename("step_0003_turn_left.png") == "TURN_LEFT"
    assert action_from_filename("step_0040_stop.png") == "STOP"
    assert action_from_filename("step_0040_jump.png") is None
    assert action_from_filename("frame_0001.png") is None


def test_trajectory_folder_gives_one_record_per_frame(trajectories: Path) -> None:
    records = read_records(trajectories)
    assert len(records) == 8  # 2 episodes x 4 frames
    ep0 = [r for r in records if r.id.startswith("ep000/")]
    assert [len(r.images) for r in ep0] == [1, 2, 3, 4]
    assert ep0[-1].answer == "STOP"
    assert ep0[2].images[-1].name.startswith("step_0002_")  # the current frame is last
    assert all(r.human.count("<image>") == len(r.images) for r in records)
    assert all(r.answer in ACTIONS for r in records)


def test_json_array_and_jsonl_read_the_same_records(tmp_path: Path, trajectories: Path) -> None:
    frames = sorted((trajectories / "ep000").glob("step_*.png"))
    rec = {
        "id": "ep/1",
        "images": [str(f.relative_to(trajectories)) for f in frames[:2]],
        "conversations": [
            {"from": "human", "value": "seen <image> now <image> go"},
            {"from": "gpt", "value": "TURN_LEFT"},
        ],
    }
    (tmp_path / "a.json").write_text(json.dumps([rec, rec]))
    (tmp_path / "a.jsonl").write_text(json.dumps(rec) + "\n" + json.dumps(rec) + "\n")
    a = read_records(tmp_path / "a.json", trajectories)
    b = read_records(tmp_path / "a.jsonl", trajectories)
    assert a == b and len(a) == 2
    assert a[0].images[0] == frames[0] and a[0].answer == "TURN_LEFT"


def test_bad_records_name_the_line_and_the_problem(tmp_path: Path) -> None:
    bad = {"id": "x", "images": ["a.png", "b.png"], "conversations": [
        {"from": "human", "value": "<image>"}, {"from": "gpt", "value": "STOP"}]}  # fmt: skip
    (tmp_path / "bad.jsonl").write_text("\n" + json.dumps(bad) + "\n")
    with pytest.raises(
        InputError, match=r"bad\.jsonl:2: the human turn has 1 <image> but there are 2 images"
    ):
        read_records(tmp_path / "bad.jsonl")
    (tmp_path / "broken.jsonl").write_text("{nope\n")
    with pytest.raises(InputError, match=r"broken\.jsonl:1 is not JSON"):
        read_records(tmp_path / "broken.jsonl")


def test_labels_cover_the_answer_only_and_images_expand_to_their_tokens(
    tiny_qwen: Path,
    trajectories: Path,
) -> None:
    from transformers import AutoImageProcessor, AutoTokenizer

    from vggtctl.services.vln.dataset import VlnDataset

    tok = AutoTokenizer.from_pretrained(tiny_qwen)
    ds = VlnDataset(read_records(trajectories), tok, AutoImageProcessor.from_pretrained(tiny_qwen), 112)
    item = ds[3]  # ep000 step 3: 4 images
    supervised = item.labels[item.labels != IGNORE]
    assert tok.decode(supervised) == "STOP<|im_end|>"
    # the supervised tokens are the last ones and equal the inputs there
    n = len(supervised)
    assert (item.labels[:-n] == IGNORE).all() and (item.input_ids[-n:] == supervised).all()
    # 84x112 frames: a 6x8 patch grid per image, 12 LLM tokens each, 4 images
    assert item.image_grid_thw.tolist() == [[1, 6, 8]] * 4
    assert int((item.input_ids == tok.convert_tokens_to_ids("<|image_pad|>")).sum()) == 48
    assert tuple(item.frames.shape) == (4, 3, 84, 112)
    # Qwen's pixels are VGGT's pixels: same preprocessing, Qwen's normalisation undone gives VGGT's input
    assert float(item.frames.min()) >= 0.0 and float(item.frames.max()) <= 1.0
    assert ds.frames.hits == 0 and ds.frames.misses == 4
    ds[2]  # shares its 3 frames with sample 3: decoded once
    assert ds.frames.hits == 3
