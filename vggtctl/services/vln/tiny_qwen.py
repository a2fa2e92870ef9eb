"""Random Qwen2.5-VL ``save_pretrained`` directories with a tokenizer built here (no Hub needed).

Tests, ``make demo`` and the benchmark use the tiny one (:func:`write_tiny_qwen`): the stock
``Qwen2_5_VLForConditionalGeneration`` with a few hundred thousand parameters. :func:`write_published_qwen`
writes the real 3B/7B-Instruct architecture (:mod:`~vggtctl.services.vln.qwen_sizes`) with random weights,
for GPU timing. Both carry a byte-level BPE trained on the navigation prompt's words with Qwen's special
tokens (``<|im_start|>``, ``<|im_end|>``, ``<|vision_start|>``, ``<|vision_end|>``, ``<|image_pad|>``,
``<|video_pad|>``, ``<|endoftext|>``) and Qwen's image processor (patch 14, temporal patch 2, merge 2, the
same as the 3B/7B models). Everything loads back with ``from_pretrained``. The weights are random from a
fixed seed: the model learns, it knows nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vggtctl.errors import UsageError
from vggtctl.services.vln.loading import quiet_transformers, qwen_model_class
from vggtctl.services.vln.prompt import ACTIONS, PREAMBLE

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
_CORPUS_EXTRA = (
    "You are a helpful assistant. system user assistant walk go turn left right forward stop the a to of "
    "and in at on into toward past through room door hallway stairs kitchen bedroom table chair wait "
    "exit enter front end reach then until near",
)


@dataclass(frozen=True)
class TinyQwenResult:
    """What a writer here wrote: the folder, parameter count, vocabulary and token ids."""

    path: Path
    parameters: int
    vocab_size: int
    hidden_size: int
    image_token_id: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "parameters": self.parameters,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "image_token_id": self.image_token_id,
        }


def build_tokenizer() -> Any:
    """A byte-level BPE (any text encodes) trained on the prompt's words, Qwen's special tokens first."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [PREAMBLE, " ".join(ACTIONS), *_CORPUS_EXTRA]
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=32768,
    )


def _token_ids(tokenizer: Any) -> dict[str, int]:
    return {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}


def qwen_config(tokenizer: Any, text: dict[str, Any], vision: dict[str, Any], tie_embeddings: bool) -> Any:
    """A Qwen2.5-VL config (nested text/vision dicts, 5.x style) whose special token ids are ``tokenizer``'s."""
    from transformers import Qwen2_5_VLConfig

    ids = _token_ids(tokenizer)
    return Qwen2_5_VLConfig(
        text_config=dict(
            **text,
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
            tie_word_embeddings=tie_embeddings,
        ),
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=tie_embeddings,
    )


def tiny_config(tokenizer: Any, hidden_size: int = 32, layers: int = 2, tie_embeddings: bool = False) -> Any:
    """A Qwen2.5-VL config small enough for a CPU test.

    ``tie_embeddings`` shares ``lm_head`` with the input embeddings, as Qwen2.5-VL-3B does (7B does not).
    """
    vocab = ((len(tokenizer) + 63) // 64) * 64
    heads = 2
    head_dim = hidden_size // heads
    if hidden_size % heads or head_dim % 2:
        raise UsageError(f"hidden size {hidden_size} must be a multiple of 4", "use 32 or 64")
    half = head_dim // 2  # sum(mrope_section) must be head_dim / 2
    section = [half - 2 * (half // 3), half // 3, half // 3]
    text = dict(
        vocab_size=vocab,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section},
    )
    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=hidden_size,
        patch_size=14,
        temporal_patch_size=2,
        spatial_merge_size=2,
        window_size=112,
        fullatt_block_indexes=[1],
    )
    return qwen_config(tokenizer, text, vision, tie_embeddings)


def published_config(
    tokenizer: Any, size: str, layers: int | None = None, vision_depth: int | None = None
) -> Any:
    """The config of Qwen2.5-VL-3B/7B-Instruct (:mod:`~vggtctl.services.vln.qwen_sizes`), token ids ``tokenizer``'s.

    Args:
        tokenizer: Gives the special token ids (all inside the published vocabulary).
        size: ``"3b"`` or ``"7b"``.
        layers: Override the LLM depth (tests build a 1-layer copy on CPU); None = published.
        vision_depth: Override the ViT depth; None = published.
    """
    from vggtctl.services.vln.qwen_sizes import PUBLISHED, SIZES

    if size not in PUBLISHED:
        raise UsageError(f"unknown Qwen2.5-VL size {size!r}", f"use one of: {', '.join(SIZES)}")
    shape = PUBLISHED[size]
    text = {**shape["text"], **({"num_hidden_layers": layers} if layers is not None else {})}
    vision = {**shape["vision"], **({"depth": vision_depth} if vision_depth is not None else {})}
    return qwen_config(tokenizer, text, vision, shape["tie_word_embeddings"])


def build_image_processor() -> Any:
    """Qwen's image processor (patch 14, merge 2, temporal 2), saved as ``preprocessor_config.json``.

    The ``Qwen2_5_VLProcessor`` wrapper is not used: in transformers 5.x it insists on a video processor,
    which needs torchvision. Tokenizer and image processor load on their own (``AutoTokenizer``,
    ``AutoImageProcessor``), from this folder or a Hub Qwen2.5-VL folder alike.
    """
    from transformers import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
        min_pixels=4 * 28 * 28,
        max_pixels=576 * 28 * 28,
    )


def write_tiny_qwen(
    out: str | os.PathLike[str],
    *,
    hidden_size: int = 32,
    layers: int = 2,
    seed: int = 0,
    tie_embeddings: bool = False,
) -> TinyQwenResult:
    """Write a tiny random Qwen2.5-VL directory (model, tokenizer, processor) that ``from_pretrained`` loads.

    Args:
        out: The folder (created; files in it are replaced).
        hidden_size: LLM width (a multiple of 4).
        layers: LLM decoder layers.
        seed: Seed of the random weights.
        tie_embeddings: Share ``lm_head`` with the input embeddings (as Qwen2.5-VL-3B).

    Returns:
        Where it went and what it holds.
    """
    tokenizer = build_tokenizer()
    return _write(out, tokenizer, tiny_config(tokenizer, hidden_size, layers, tie_embeddings), seed)


def write_published_qwen(
    out: str | os.PathLike[str],
    size: str,
    *,
    layers: int | None = None,
    vision_depth: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    dtype: str = "bf16",
) -> TinyQwenResult:
    """Write a random Qwen2.5-VL-3B/7B-Instruct of the real architecture, offline (same files as the tiny one).

    Built on ``device`` (a GPU initialises 8 B parameters in seconds) and saved in ``dtype``, bf16 like the
    Hub checkpoints, so ``train-vln`` loads it as it loads those (transformers' ``dtype="auto"``).

    Args:
        out: The folder (created; files in it are replaced). 7B in bf16 is 16.6 GB.
        size: ``"3b"`` or ``"7b"``.
        layers: Override the LLM depth (None = published).
        vision_depth: Override the ViT depth (None = published).
        seed: Seed of the random weights.
        device: Where the weights are initialised.
        dtype: ``"bf16"``, ``"fp16"`` or ``"fp32"``.

    Returns:
        Where it went and what it holds.
    """
    from vggtctl.services.model_loader import parse_dtype

    tokenizer = build_tokenizer()
    config = published_config(tokenizer, size, layers, vision_depth)
    return _write(out, tokenizer, config, seed, device, parse_dtype(dtype))


def _write(out: str | os.PathLike[str], tokenizer: Any, config: Any, seed: int, device: str = "cpu",
           dtype: Any = None) -> TinyQwenResult:  # fmt: skip
    import torch

    qwen_class = qwen_model_class()
    quiet_transformers()
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} is a file", "give a folder, e.g. --out tiny-qwen")
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    if dtype is not None:
        torch.set_default_dtype(dtype)  # parameters are created in it: no fp32 copy of a 7B model
    try:
        with torch.device(device):
            model = qwen_class(config)
    finally:
        torch.set_default_dtype(default)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    build_image_processor().save_pretrained(path)
    return TinyQwenResult(
        path=path,
        parameters=sum(p.numel() for p in model.parameters()),
        vocab_size=config.text_config.vocab_size,
        hidden_size=config.text_config.hidden_size,
        image_token_id=config.image_token_id,
    )
