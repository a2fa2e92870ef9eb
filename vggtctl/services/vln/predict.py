"""``train-vln predict``: the exported model on one sample, choosing the action.

The sample goes through the training pipeline (same preprocessing, same prompt prefix, same VGGT layer);
the model scores each action's answer (sum of the answer tokens' log-probabilities after the prefix)
and the best one is the prediction. Scoring the four answers rather than free generation means the
output is always a valid action, and the scores show how sure the model is.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from vggtctl.errors import InputError
from vggtctl.runtime.device import resolve_device
from vggtctl.services.model_loader import load_model
from vggtctl.services.vln.checkpoint import MERGER, read_export_facts
from vggtctl.services.vln.dataset import VlnDataset, collate
from vggtctl.services.vln.loading import load_qwen
from vggtctl.services.vln.model import VlnModel
from vggtctl.services.vln.prompt import ACTIONS, encode_answer
from vggtctl.services.vln.records import Record, read_records
from vggtctl.services.vln.train import batch_spatial


@dataclass
class Prediction:
    """The chosen action and every action's score (log-probability of its answer)."""

    id: str
    action: str
    scores: dict[str, float]
    expected: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "action": self.action, "scores": self.scores, "expected": self.expected}


def load_vln(export: str | os.PathLike[str], device: str = "cpu", vggt: str | None = None) -> tuple[Any, ...]:
    """``(model, vggt, tokenizer, image_processor, facts)`` from a ``train-vln`` export folder."""
    path = Path(export)
    facts = read_export_facts(path)
    qwen, tokenizer, image_processor = load_qwen(str(path))
    model = VlnModel(qwen, facts["context_dim"], facts["merger_hidden"], facts["lam"], facts["tile_spatial"])
    model.vggt_merger.load_state_dict(load_file(path / MERGER))
    model.to(device).eval()
    vggt_model = load_model(vggt or facts["vggt"], device=device)
    return model, vggt_model, tokenizer, image_processor, facts


def _one_record(sample: Path) -> Record:
    records = read_records(sample) if sample.is_dir() else read_records(sample, None)
    if len(records) != 1 and not sample.is_dir():
        raise InputError(f"--sample {sample} holds {len(records)} samples", "put one record in the file")
    return records[-1]


@torch.no_grad()
def predict(
    checkpoint: str | os.PathLike[str],
    sample: str | os.PathLike[str],
    device: str = "auto",
    vggt: str | None = None,
) -> Prediction:
    """Predict the action for one sample (a one-record JSON file, or an episode folder: its last step).

    Raises:
        InputError: Not an export folder, or not one sample.
    """
    dev = resolve_device(device)
    model, vggt_model, tokenizer, image_processor, facts = load_vln(checkpoint, dev, vggt)
    record = _one_record(Path(sample))
    # The prefix is built by the training pipeline; the answer there is replaced by each candidate.
    ds = VlnDataset([record], tokenizer, image_processor, facts["image_width"])
    item = ds[0]
    answer_len = len(encode_answer(tokenizer, record.answer))
    prefix = item.input_ids[: len(item.input_ids) - answer_len]
    batch = collate([item], tokenizer.pad_token_id).to(dev)
    spatial = batch_spatial(vggt_model, batch, facts["vggt_layer"])
    scores: dict[str, float] = {}
    for action in ACTIONS:
        target = torch.tensor(encode_answer(tokenizer, action), dtype=torch.long)
        ids = torch.cat([prefix, target])[None].to(dev)
        mask = torch.ones_like(ids)
        out = model(ids, mask, batch.pixel_values, batch.image_grid_thw, batch.images_per_sample, spatial)
        logp = torch.log_softmax(out.logits[0, len(prefix) - 1 : -1].float(), dim=-1)
        scores[action] = float(logp.gather(-1, target.to(dev)[:, None]).sum())
    best = max(scores, key=scores.__getitem__)
    expected = record.answer if record.answer in ACTIONS else None
    return Prediction(record.id, best, scores, expected)


def sample_to_json(record: Record) -> str:
    """One record in the JSON schema ``--data`` and ``--sample`` read (for writing a sample file)."""
    return json.dumps(
        {
            "id": record.id,
            "images": [str(p) for p in record.images],
            "conversations": [
                {"from": "human", "value": record.human},
                {"from": "gpt", "value": record.answer},
            ],
        }
    )
