"""Camera head: the camera token of the last layer → 9-number pose encodings, refined 4 times.

Encoding ``[tx, ty, tz, qx, qy, qz, qw, fov_h, fov_w]`` (camera-from-world translation, XYZW
quaternion, vertical/horizontal field of view in radians). Each iteration modulates the normed
camera token with the embedding of the previous (raw, detached) estimate (adaLN: shift, scale,
gate), runs the trunk (self-attention across the S camera tokens of a sequence, no RoPE, no
qk-norm) and adds a delta. The output of each iteration is activated: T and q linear, FoV ReLU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import Block, Mlp

POSE_ENCODING_DIM = 9


class CameraHead(nn.Module):
    """Iterative camera-pose head.

    Args:
        dim_in: Width of the aggregated tokens (2 × embed_dim).
        num_heads: Attention heads of the trunk blocks.
        trunk_depth: Trunk blocks.
        init_values: LayerScale initial value of the trunk.
        layer: Aggregator layer to read (the last one).
        iterations: Default number of refinements.
    """

    def __init__(
        self,
        dim_in: int = 2048,
        num_heads: int = 16,
        trunk_depth: int = 4,
        init_values: float = 0.01,
        layer: int = -1,
        iterations: int = 4,
    ) -> None:
        super().__init__()
        self.layer = layer
        self.iterations = iterations
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_ENCODING_DIM))
        self.trunk = nn.Sequential(
            *(
                Block(dim_in, num_heads, 4.0, qk_norm=False, init_values=init_values)
                for _ in range(trunk_depth)
            )
        )
        self.token_norm = nn.LayerNorm(dim_in)
        self.trunk_norm = nn.LayerNorm(dim_in)
        self.embed_pose = nn.Linear(POSE_ENCODING_DIM, dim_in)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_in, 3 * dim_in))
        self.adaln_norm = nn.LayerNorm(dim_in, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim_in, dim_in // 2, POSE_ENCODING_DIM)

    def forward(
        self, tokens_list: Sequence[Tensor | None], num_iterations: int | None = None
    ) -> list[Tensor]:
        """Pose encodings ``[B, S, 9]``, one per iteration (the last is the prediction).

        Args:
            tokens_list: Aggregator outputs; entry ``self.layer`` must be present.
            num_iterations: Refinements (default ``self.iterations``).
        """
        tokens = tokens_list[self.layer]
        if tokens is None:
            raise ValueError(f"camera head needs aggregator layer {self.layer}, which was not computed")
        t = self.token_norm(tokens[:, :, 0].float())
        b, s, _ = t.shape
        t_normed = self.adaln_norm(t)
        raw: Tensor | None = None
        outputs: list[Tensor] = []
        for _ in range(num_iterations or self.iterations):
            if raw is None:
                cond = self.embed_pose(self.empty_pose_tokens.expand(b, s, -1))
            else:
                # As the reference: no backprop through earlier iterations (the sum is detached too).
                raw = raw.detach()
                cond = self.embed_pose(raw)
            shift, scale, gate = self.poseLN_modulation(cond).chunk(3, dim=-1)
            h = gate * (t_normed * (1 + scale) + shift) + t
            h = self.trunk(h)
            delta = self.pose_branch(self.trunk_norm(h))
            raw = delta if raw is None else raw + delta
            outputs.append(activate_pose(raw))
        return outputs


def activate_pose(raw: Tensor) -> Tensor:
    """Translation and quaternion linear, field of view ReLU."""
    return torch.cat((raw[..., :7], F.relu(raw[..., 7:])), dim=-1)
