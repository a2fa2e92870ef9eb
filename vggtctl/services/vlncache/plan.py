"""Which VGGT passes compute which samples (pure; no torch).

Streaming: a sample's value is the last frame's tokens after the causal pass over its frames, so a
sample whose frame list is a prefix of another's is emitted by that longer pass after its own last
frame (the early steps 0..8 of an episode share one pass). Per-image: one single-frame pass per
distinct current frame. Samples with the same key (same content) share one entry and one pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .records import CacheSample


@dataclass
class Pass:
    """One streaming run over ``frames``; ``emit[t]`` are the samples whose value is frame t's output."""

    frames: tuple  # paths, in order
    hashes: tuple[str, ...]
    emit: dict[int, list[CacheSample]] = field(default_factory=dict)

    @property
    def samples(self) -> list[CacheSample]:
        return [s for t in sorted(self.emit) for s in self.emit[t]]


def plan_passes(
    samples: Sequence[CacheSample], hashes: dict[str, tuple[str, ...]], history: str
) -> list[Pass]:
    """Group samples into passes, deterministically (sorted by content, not by input order).

    Args:
        samples: Samples to compute.
        hashes: Sample id → ordered sha256 of its frames.
        history: ``streaming`` or ``per-image``.
    """
    by_content: dict[tuple[str, ...], list[CacheSample]] = {}
    frames_of: dict[tuple[str, ...], tuple] = {}
    for s in samples:
        h = hashes[s.id] if history == "streaming" else hashes[s.id][-1:]
        by_content.setdefault(h, []).append(s)
        frames_of.setdefault(h, s.frames if history == "streaming" else s.frames[-1:])
    passes: list[Pass] = []
    covered: dict[tuple[str, ...], tuple[Pass, int]] = {}
    for h in sorted(by_content, key=lambda t: (-len(t), t)):
        hit = covered.get(h)
        if hit is None:
            p = Pass(frames_of[h], h)
            passes.append(p)
            for k in range(1, len(h) + 1):
                covered.setdefault(h[:k], (p, k - 1))
            hit = (p, len(h) - 1)
        p, t = hit
        p.emit.setdefault(t, []).extend(sorted(by_content[h], key=lambda s: s.id))
    return passes
