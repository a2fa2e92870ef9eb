"""The published shapes of Qwen2.5-VL-3B/7B-Instruct: random-weight models of the real architecture.

Step time and memory do not depend on weight values, so a random model built from these shapes times
like the real one (``benchmarks/bench_train_vln.py --size 3b|7b``). Values are the Hub ``config.json``
files, read through copies that name them (``_name_or_path: Qwen/Qwen2.5-VL-3B-Instruct`` /
``-7B-Instruct``): huggingface.co/dahwinsingularity/vllm2, zyoNoob/Qwen2.5-VL-3B-Instruct-AWQ and
unsloth/Qwen2.5-VL-3B-Instruct-unsloth-bnb-4bit for 3B; Qwen/Qwen2.5-VL-7B-Instruct-AWQ (Qwen's own) and
unsloth/Qwen2.5-VL-7B-Instruct for 7B. Their ``vision_config`` lists only ``hidden_size`` 1280 (and
``out_hidden_size`` 2048 for 3B); the rest are ``Qwen2_5_VLVisionConfig``'s defaults (transformers
``configuration_qwen2_5_vl.py``: depth 32, intermediate 3420, 16 heads, patch 14, temporal patch 2, merge 2,
window 112, full attention in blocks 7/15/23/31, ``out_hidden_size`` 3584), which the printed 7B module
tree agrees with (32 blocks of 1280, MLP 3420, merger 5120 -> 3584).

The tokens are not the real ones: the writer pairs these shapes with the tiny BPE tokenizer (its ids
sit inside the published vocabulary), so prompts are a few tokens shorter; the ~3.5k image tokens of a
9-frame sample, which dominate the step, are the real count.
"""

from __future__ import annotations

from typing import Any

SIZES = ("3b", "7b")

# Total parameters of the Hub checkpoints (tied lm_head counted once): MTEB's model metadata for
# Alibaba-NLP/GVE-3B / GVE-7B (adapted from Qwen2.5-VL-3B/7B-Instruct, n_parameters), and the Hub's
# numParameters for Qwen2.5-VL-7B-Instruct. The configs below build exactly these counts (tested).
PUBLISHED_PARAMETERS = {"3b": 3_754_622_976, "7b": 8_292_166_656}

_ROPE = {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [16, 24, 24]}
_VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "spatial_merge_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "tokens_per_second": 2,
}
_TEXT = {
    "max_position_embeddings": 128_000,
    "rms_norm_eps": 1e-6,
    "sliding_window": 32768,
    "rope_parameters": _ROPE,
}

PUBLISHED: dict[str, dict[str, Any]] = {
    "3b": {
        "text": {
            **_TEXT,
            "vocab_size": 151_936,
            "hidden_size": 2048,
            "intermediate_size": 11008,
            "num_hidden_layers": 36,
            "num_attention_heads": 16,
            "num_key_value_heads": 2,
            "max_window_layers": 70,
        },
        "vision": {**_VISION, "out_hidden_size": 2048},
        "tie_word_embeddings": True,
    },
    "7b": {
        "text": {
            **_TEXT,
            "vocab_size": 152_064,
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "max_window_layers": 28,
        },
        "vision": {**_VISION, "out_hidden_size": 3584},
        "tie_word_embeddings": False,
    },
}
