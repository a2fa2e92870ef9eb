"""Which layers a quantization touches, and which stay in float (listed in the report).

Groups (by module name):
- ``aggregator``: the Linears of the 2 x depth frame/global blocks (MLP always; attention qkv/proj
  with ``quantize_attention``); Hadamard rotation applies here.
- ``patch_embed``: the same sublayers in the DINOv2 patch-embed blocks (``quantize_patch_embed``).
- ``heads`` (``quantize_heads``): camera trunk and camera Linears, every DPT / track-head
  convolution (the DPT projections included), the tracker's Linears.

Always float: the 14x14 patch-embed convolution, LayerNorms, LayerScales, camera/register/cls
tokens, positional embeddings, the track head's ``nn.MultiheadAttention`` (it reads its weights
directly, not through a Linear call), and the final layer of each head (its output stays exact
in form: depth/points/confidence, the pose encoding, flow/visibility/confidence of tracks).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

AGGREGATOR = re.compile(r"^aggregator\.(frame_blocks|global_blocks)\.\d+\.(attn\.(qkv|proj)|mlp\.fc[12])$")
PATCH_EMBED = re.compile(r"^aggregator\.patch_embed\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.fc[12])$")
HEADS = ("camera_head.", "depth_head.", "point_head.", "track_head.")
FINAL = re.compile(
    r"^(camera_head\.pose_branch\.fc2|(depth|point)_head\.scratch\.output_conv2\.\d+"
    r"|track_head\.feature_extractor\.scratch\.output_conv1"
    r"|track_head\.tracker\.(updateformer\.flow_head|vis_predictor\.0|conf_predictor\.0))$"
)
FLOAT_ALWAYS = (
    "aggregator.patch_embed.patch_embed.proj (14x14 patch convolution)",
    "LayerNorms and LayerScales",
    "camera / register / cls tokens and positional embeddings",
    "track_head nn.MultiheadAttention projections",
)


@dataclass(frozen=True)
class LayerPlan:
    """One layer to quantize.

    Attributes:
        name: Module name (``aggregator.frame_blocks.0.mlp.fc1``).
        op: ``linear`` or ``conv``.
        group: ``aggregator``, ``patch_embed`` or ``heads``.
        rotate: Hadamard rotation folded in.
        tokens: ``patch`` (calibrate on patch tokens only: the camera/register tokens' heavy tails
            would set the range) or ``all`` (head layers, whose inputs are all of one kind).
    """

    name: str
    op: str
    group: str
    rotate: bool = False
    tokens: str = "all"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_final(name: str) -> bool:
    if FINAL.match(name) is None:
        return False
    # Only the last conv of output_conv2 is the head's output layer.
    return not name.endswith("output_conv2.0")


def plan_layers(
    model: nn.Module,
    *,
    attention: bool,
    heads: bool,
    patch_embed: bool,
    rotate: bool,
) -> tuple[list[LayerPlan], list[str]]:
    """The layers to quantize and the named float layers (Linear/conv modules left alone).

    Returns:
        ``(plans, float_layers)``; ``float_layers`` ends with :data:`FLOAT_ALWAYS`'s kinds.
    """
    plans: list[LayerPlan] = []
    kept: list[str] = []
    for name, mod in model.named_modules():
        is_linear = type(mod) is nn.Linear
        is_conv = type(mod) in (nn.Conv2d, nn.ConvTranspose2d)
        if not (is_linear or is_conv):
            continue
        is_attn = ".attn." in name
        if is_linear and AGGREGATOR.match(name):
            if attention or not is_attn:
                plans.append(LayerPlan(name, "linear", "aggregator", rotate, "patch"))
                continue
        elif is_linear and PATCH_EMBED.match(name):
            if patch_embed and (attention or not is_attn):
                plans.append(LayerPlan(name, "linear", "patch_embed", False, "patch"))
                continue
        elif name.startswith(HEADS) and heads and not _is_final(name):
            plans.append(LayerPlan(name, "conv" if is_conv else "linear", "heads", False, "all"))
            continue
        if name != "aggregator.patch_embed.patch_embed.proj":
            kept.append(name)
    return plans, kept + list(FLOAT_ALWAYS)
