"""Loading the two encoders of ``train-vln``: Qwen2.5-VL (Hub id or local folder) and the frozen VGGT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vggtctl.errors import InputError

INIT_TINY_HINT = (
    "for a local test model run `vggtctl train-vln init-tiny --out tiny-qwen` and pass --model tiny-qwen"
)


def quiet_transformers() -> None:
    """No transformers progress bars ("Loading weights", "Writing model shards"): vggtctl reports progress."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def qwen_model_class() -> Any:
    """``transformers.Qwen2_5_VLForConditionalGeneration``, imported without torchao's import-time noise.

    Importing transformers' modeling code imports torchao when it is installed (the ``quantize`` extra), and on
    a CPU machine torchao logs "Failed to load ... _C_mxfp8" and torch's pytree Enum notes on every
    ``train-vln`` and ``predict``: not problems (``--debug`` shows them).
    """
    from vggtctl.runtime.deepspeed_logs import deepspeed_logs_to_stderr
    from vggtctl.services.quantize.torchao_import import quiet_torchao

    deepspeed_logs_to_stderr()  # transformers imports DeepSpeed, whose logger writes to stdout
    with quiet_torchao():
        from transformers import Qwen2_5_VLForConditionalGeneration
    return Qwen2_5_VLForConditionalGeneration


def load_qwen(source: str, dtype: Any = None) -> tuple[Any, Any, Any]:
    """``(model, tokenizer, image_processor)`` from a Hub id or a local ``save_pretrained`` folder.

    Raises:
        InputError: The folder is missing parts, or the Hub cannot be reached / has no such repo.
    """
    from transformers import AutoImageProcessor, AutoTokenizer

    qwen_class = qwen_model_class()
    quiet_transformers()
    local = Path(source).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise InputError(
            f"--model {source} has no config.json", "pass a save_pretrained folder. " + INIT_TINY_HINT
        )
    where = str(local) if local.exists() else source
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        image_processor = AutoImageProcessor.from_pretrained(where)
        kwargs = {"dtype": dtype} if dtype is not None else {}
        model = qwen_class.from_pretrained(where, attn_implementation="sdpa", **kwargs)
    except OSError as e:
        raise InputError(
            f"cannot load Qwen2.5-VL from {source!r}: {str(e).splitlines()[0]}", INIT_TINY_HINT
        ) from None
    if getattr(model.config, "model_type", "") != "qwen2_5_vl":
        raise InputError(f"--model {source} is a {model.config.model_type} model", "pass a Qwen2.5-VL model")
    return model, tokenizer, image_processor
