"""VGGT configuration: one frozen dataclass and the named presets (``vggt-1b``, ``tiny``).

This module imports neither torch nor the model, so the CLI can list presets cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from vggtctl.errors import UsageError


@dataclass(frozen=True)
class VGGTConfig:
    """Every structural choice of a VGGT model.

    The defaults are ``facebook/VGGT-1B``. Fields that change parameter shapes must match the
    checkpoint; ``enable_*`` switch a head off entirely (it then has no state-dict keys).

    Attributes:
        img_size: Training resolution; sets the DINOv2 pos-embed grid (``img_size // patch_size``)².
        patch_size: ViT patch size (images must be multiples of it).
        embed_dim: Token width C of the aggregator (heads read 2·C).
        depth: Number of frame/global block pairs.
        num_heads: Attention heads of the frame/global blocks (head_dim = C / heads).
        mlp_ratio: MLP hidden width / C.
        num_register_tokens: Register tokens per frame (aggregator and DINOv2 patch embed).
        rope_freq: Base frequency of the 2-D RoPE.
        init_values: LayerScale initial value of the aggregator and camera-trunk blocks.
        patch_embed_dim: Width of the DINOv2 patch embed (must equal ``embed_dim``: no projection).
        patch_embed_depth: Blocks of the DINOv2 patch embed.
        patch_embed_heads: Attention heads of the DINOv2 patch embed.
        camera_heads: Attention heads of the camera trunk.
        camera_trunk_depth: Blocks of the camera trunk.
        camera_iterations: Iterative refinements of the camera head.
        dpt_features: Fusion width of the depth and point DPT heads.
        dpt_out_channels: Projection widths of the four DPT layers (also the track extractor's).
        dpt_layers: Aggregator layers the DPT heads read.
        dpt_frames_chunk_size: Frames per DPT chunk (same result, bounded memory); 0 = all at once.
        track_features: Latent width of the track head.
        track_hidden_size: Width of the tracker's update transformer.
        track_iters: Refinement iterations of the tracker.
        enable_camera: Build the camera head.
        enable_depth: Build the depth head.
        enable_point: Build the point head.
        enable_track: Build the track head.
        gradient_checkpointing: Recompute each block in backward (only ever used in training mode).
    """

    img_size: int = 518
    patch_size: int = 14
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    rope_freq: float = 100.0
    init_values: float = 0.01
    patch_embed_dim: int = 1024
    patch_embed_depth: int = 24
    patch_embed_heads: int = 16
    camera_heads: int = 16
    camera_trunk_depth: int = 4
    camera_iterations: int = 4
    dpt_features: int = 256
    dpt_out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    dpt_layers: tuple[int, int, int, int] = (4, 11, 17, 23)
    dpt_frames_chunk_size: int = 8
    track_features: int = 128
    track_hidden_size: int = 384
    track_iters: int = 4
    enable_camera: bool = True
    enable_depth: bool = True
    enable_point: bool = True
    enable_track: bool = True
    gradient_checkpointing: bool = True

    def __post_init__(self) -> None:
        # Tuples keep the config hashable (it keys caches) even when overrides pass lists.
        object.__setattr__(self, "dpt_out_channels", tuple(int(c) for c in self.dpt_out_channels))
        object.__setattr__(self, "dpt_layers", tuple(int(i) for i in self.dpt_layers))
        problems = _problems(self)
        if problems:
            raise UsageError(
                "invalid VGGT config: " + "; ".join(problems),
                hint=f"start from a preset: get_config({sorted(PRESETS)[0]!r}, ...) and override only head switches",
            )

    @property
    def head_dim_in(self) -> int:
        """Width of the tokens the heads read: frame ‖ global output = 2 · embed_dim."""
        return 2 * self.embed_dim

    @property
    def patch_start_idx(self) -> int:
        """Index of the first patch token per frame (1 camera + registers)."""
        return 1 + self.num_register_tokens

    @property
    def camera_layer(self) -> int:
        """Aggregator layer the camera head reads (the last one)."""
        return self.depth - 1

    @property
    def heads(self) -> tuple[str, ...]:
        """Names of the enabled heads, in state-dict order."""
        names = (("camera", self.enable_camera), ("point", self.enable_point), ("depth", self.enable_depth))
        out = tuple(n for n, on in names if on)
        return out + (("track",) if self.enable_track else ())

    def structure(self) -> dict[str, Any]:
        """The fields that decide parameter shapes (everything but head switches and checkpointing)."""
        skip = {"enable_camera", "enable_depth", "enable_point", "enable_track", "gradient_checkpointing",
                "dpt_frames_chunk_size", "track_iters", "camera_iterations"}  # fmt: skip
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


def _problems(c: VGGTConfig) -> list[str]:
    out: list[str] = []
    if c.patch_embed_dim != c.embed_dim:
        out.append(f"patch_embed_dim {c.patch_embed_dim} != embed_dim {c.embed_dim} (there is no projection)")
    if c.embed_dim % c.num_heads:
        out.append(f"embed_dim {c.embed_dim} is not divisible by num_heads {c.num_heads}")
    elif (c.embed_dim // c.num_heads) % 4:
        out.append(f"head dim {c.embed_dim // c.num_heads} must be a multiple of 4 for the 2-D RoPE")
    if c.patch_embed_dim % c.patch_embed_heads:
        out.append(
            f"patch_embed_dim {c.patch_embed_dim} is not divisible by patch_embed_heads {c.patch_embed_heads}"
        )
    if c.head_dim_in % c.camera_heads:
        out.append(f"camera width {c.head_dim_in} is not divisible by camera_heads {c.camera_heads}")
    if c.img_size % c.patch_size:
        out.append(f"img_size {c.img_size} is not a multiple of patch_size {c.patch_size}")
    if len(c.dpt_out_channels) != 4 or len(c.dpt_layers) != 4:
        out.append("dpt_out_channels and dpt_layers need exactly 4 entries")
    bad = [i for i in c.dpt_layers if not 0 <= i < c.depth]
    if bad:
        out.append(f"dpt_layers {bad} outside 0..{c.depth - 1}")
    if c.dpt_features % 2 or c.dpt_features < 2:
        out.append(f"dpt_features {c.dpt_features} must be even")
    if c.dpt_frames_chunk_size < 0:
        out.append(f"dpt_frames_chunk_size {c.dpt_frames_chunk_size} must be >= 0")
    if min(c.depth, c.patch_embed_depth, c.camera_trunk_depth, c.camera_iterations, c.track_iters) < 1:
        out.append("depths and iteration counts must be >= 1")
    return out


PRESETS: dict[str, VGGTConfig] = {
    "vggt-1b": VGGTConfig(),
    # The seeded test model: every 1B key name, tiny widths, all 24 layers (README of the reference data).
    "tiny": VGGTConfig(
        img_size=168,
        embed_dim=64,
        num_heads=4,
        patch_embed_dim=64,
        patch_embed_heads=4,
        camera_heads=4,
        dpt_features=32,
        dpt_out_channels=(16, 32, 64, 64),
        track_features=32,
        track_hidden_size=64,
    ),
}


def get_config(preset: str, **overrides: Any) -> VGGTConfig:
    """The config of a named preset, with field overrides.

    Args:
        preset: ``"vggt-1b"`` or ``"tiny"``.
        **overrides: Fields to change, e.g. ``enable_track=False``.

    Returns:
        A new :class:`VGGTConfig`.

    Raises:
        UsageError: Unknown preset or unknown/invalid override.
    """
    if preset not in PRESETS:
        raise UsageError(
            f"unknown model preset {preset!r} (known: {', '.join(sorted(PRESETS))})",
            hint="use --preset vggt-1b for facebook/VGGT-1B or --preset tiny for the seeded test model",
        )
    known = {f.name for f in fields(VGGTConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise UsageError(
            f"unknown VGGT config field(s) {', '.join(unknown)}",
            hint=f"valid fields: {', '.join(sorted(known))}",
        )
    return replace(PRESETS[preset], **overrides)


def preset_name(config: VGGTConfig) -> str | None:
    """The preset whose structure ``config`` has (head switches ignored), or None."""
    for name, preset in PRESETS.items():
        if preset.structure() == config.structure():
            return name
    return None
