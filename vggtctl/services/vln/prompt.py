"""The one navigation prompt, built and tokenised the same way at training and at inference.

JanusVLN trains on one wording and evaluates on another; here :func:`human_text` writes the user turn
for trajectory folders and :func:`encode_prompt` turns any user turn (ours or a JSON record's) into
token ids, expanding each ``<image>`` into ``<|vision_start|>`` + N × ``<|image_pad|>`` +
``<|vision_end|>`` with N = the image's LLM token count. Training appends the answer
(:func:`encode_answer`); ``train-vln predict`` scores each action's answer after the same prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vggtctl.errors import InputError

ACTIONS = ("MOVE_FORWARD", "TURN_LEFT", "TURN_RIGHT", "STOP")
IMAGE = "<image>"
SYSTEM = "You are a helpful assistant."
PREAMBLE = (
    "You are a navigation agent in an indoor scene. Follow the instruction by choosing one low-level action "
    "at a time, using what you have seen so far and what you see now."
)
IGNORE = -100
"""Label of tokens the loss skips (everything but the assistant's answer)."""


def human_text(instruction: str, n_images: int) -> str:
    """The user turn for a sample with ``n_images`` frames (history first, the current frame last)."""
    if n_images < 1:
        raise InputError("a sample needs at least one image", "every step has its current observation")
    history = IMAGE * (n_images - 1)
    return (
        f"{PREAMBLE} Your earlier observations: {history}. Your current observation: {IMAGE}. "
        f"Your task: {instruction.strip()} Choose one action from: {', '.join(ACTIONS)}."
    )


def action_from_filename(name: str) -> str | None:
    """``step_0012_move_forward.png`` -> ``MOVE_FORWARD`` (the action to take at that frame), else None."""
    stem = name.rsplit(".", 1)[0]
    parts = stem.split("_")
    if len(parts) < 3 or parts[0] != "step" or not parts[1].isdigit():
        return None
    action = "_".join(parts[2:]).upper()
    return action if action in ACTIONS else None


def _prefix_text(human: str, tokens_per_image: Sequence[int]) -> str:
    pieces = human.split(IMAGE)
    if len(pieces) - 1 != len(tokens_per_image):
        raise InputError(
            f"the prompt has {len(pieces) - 1} {IMAGE} placeholders but the sample has "
            f"{len(tokens_per_image)} images",
            f"write one {IMAGE} per entry of 'images', in order",
        )
    out = [pieces[0]]
    for n, rest in zip(tokens_per_image, pieces[1:], strict=True):
        out.append("<|vision_start|>" + "<|image_pad|>" * n + "<|vision_end|>" + rest)
    body = "".join(out)
    return (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{body}<|im_end|>\n<|im_start|>assistant\n"
    )


def encode_prompt(tokenizer: Any, human: str, tokens_per_image: Sequence[int]) -> list[int]:
    """Token ids of the chat up to the assistant's answer (system, user turn with images, ``assistant\\n``)."""
    return list(tokenizer(_prefix_text(human, tokens_per_image), add_special_tokens=False)["input_ids"])


def encode_answer(tokenizer: Any, answer: str) -> list[int]:
    """Token ids of the supervised answer: the action and ``<|im_end|>``."""
    return list(tokenizer(answer.strip() + "<|im_end|>", add_special_tokens=False)["input_ids"])


def encode_sample(
    tokenizer: Any, human: str, answer: str, tokens_per_image: Sequence[int]
) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of a training sample; labels are ``IGNORE`` everywhere but the answer."""
    prefix = encode_prompt(tokenizer, human, tokens_per_image)
    target = encode_answer(tokenizer, answer)
    return prefix + target, [IGNORE] * len(prefix) + target
