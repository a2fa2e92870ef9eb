"""bench_train_vln.py --size: the published Qwen2.5-VL-3B/7B shapes, the written folder, the CPU refusal, tiny."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vggtctl.services.vln.qwen_sizes import PUBLISHED_PARAMETERS
from vggtctl.services.vln.tiny_qwen import build_tokenizer, published_config, write_published_qwen

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "bench_train_vln.py"


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(BENCH), *args], env=env, capture_output=True, text=True,
                          timeout=600, check=False)  # fmt: skip


@pytest.mark.parametrize(
    ("size", "total", "hidden", "tied"),
    [("3b", 3_754_622_976, 2048, True), ("7b", 8_292_166_656, 3584, False)],
)
def test_published_shapes_build_the_published_parameter_count(
    size: str, total: int, hidden: int, tied: bool
) -> None:
    from transformers import Qwen2_5_VLForConditionalGeneration

    config = published_config(build_tokenizer(), size)
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(config)
    assert sum(p.numel() for p in model.parameters()) == total == PUBLISHED_PARAMETERS[size]
    assert model.config.text_config.hidden_size == hidden
    assert (model.lm_head.weight is model.get_input_embeddings().weight) is tied
    assert len(model.model.visual.blocks) == 32 and model.config.vision_config.fullatt_block_indexes == [
        7,
        15,
        23,
        31,
    ]


def test_written_3b_folder_loads_with_from_pretrained(tmp_path: Path) -> None:
    """The real widths at depth 1 (fits a CPU): model, tokenizer and image processor load back, in bf16."""
    from vggtctl.services.vln.loading import load_qwen

    written = write_published_qwen(tmp_path / "q", "3b", layers=1, vision_depth=1)
    model, tokenizer, processor = load_qwen(str(written.path))
    cfg = model.config
    assert (cfg.text_config.num_hidden_layers, cfg.vision_config.depth) == (1, 1)
    assert (cfg.text_config.hidden_size, cfg.text_config.vocab_size, cfg.vision_config.out_hidden_size) == (
        2048, 151_936, 2048,
    )  # fmt: skip
    assert next(model.parameters()).dtype == torch.bfloat16
    assert sum(p.numel() for p in model.parameters()) == written.parameters
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") == cfg.image_token_id == written.image_token_id
    assert (processor.patch_size, processor.merge_size) == (14, 2)


def test_real_size_on_cpu_is_refused_in_one_line() -> None:
    r = _bench("--size", "3b", "--steps", "1")
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "--allow-cpu" in r.stderr and "3b on cpu" in r.stderr


def test_tiny_bench_still_runs(tmp_path: Path) -> None:
    r = _bench("--steps", "1", "--width", "112", "--frames", "2", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads((tmp_path / "train_vln.json").read_text())
    assert result["config"]["size"] == "tiny" and result["qwen"]["parameters"] > 0
    for half in ("live", "cached"):
        assert result[half]["steps_measured"] == 1 and result[half]["median_s"]["step_time"] > 0
    assert result["cached"]["cache_hit_ratio"] == 1.0
