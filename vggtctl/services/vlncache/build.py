"""``vggtctl cache build``: compute every sample's value once, write it content-addressed, resumably.

Phases: read samples → check frames (missing ones listed, skipped or fatal) → estimate bytes vs free
disk (``dry_run`` stops here) → load the model, derive the spec → hash frames into keys → take the
lock (rank 0) and fold in what a killed build left → plan passes over what is missing, shard them by
rank → encode, write entries (temp + rename) and append rows to this rank's shard manifest → rank 0
merges the shards into ``manifest.jsonl``.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vggtctl.defaults import DEFAULT_REPO
from vggtctl.errors import DiskSpaceError, InputError, Problem, UsageError, raise_problems
from vggtctl.progress import NULL_PROGRESS, Progress
from vggtctl.runtime.dist import dist_info

from .entries import entry_bytes, frame_sha256, missing_frames
from .layout import CacheDir
from .records import CacheSample, read_samples
from .spec import HISTORIES, MODES, STORAGE_DTYPES

MISSING_CHOICES = ("fail", "skip")
_LISTED = 10


@dataclass
class BuildConfig:
    """Settings of one cache build (the defaults are JanusVLN's)."""

    data: Path
    cache_dir: Path
    image_root: Path | None = None
    model: str = DEFAULT_REPO
    preset: str | None = None
    revision: str | None = None
    layer: int = 22
    image_width: int = 644
    mode: str = "crop"
    history: str = "streaming"
    dtype: str = "bf16"
    device: str = "auto"
    max_samples: int | None = None
    skip_existing: bool = True
    missing: str = "fail"
    verify: bool = False
    verify_samples: int = 4
    dry_run: bool = False

    def problems(self) -> list[Problem]:
        out = []
        if self.history not in HISTORIES:
            out.append(Problem.of("history", f"use {' or '.join(HISTORIES)}", self.history))
        if self.dtype not in STORAGE_DTYPES:
            out.append(Problem.of("dtype", f"use {', '.join(STORAGE_DTYPES)}", self.dtype))
        if self.mode not in MODES:
            out.append(Problem.of("mode", "use crop or pad", self.mode))
        if self.image_width < 14 or self.image_width % 14:
            out.append(Problem.of("image_width", "a positive multiple of 14 (644 or 518)", self.image_width))
        if self.max_samples is not None and self.max_samples < 1:
            out.append(Problem.of("max_samples", "must be >= 1", self.max_samples))
        if self.missing not in MISSING_CHOICES:
            out.append(Problem.of("missing", "use fail or skip", self.missing))
        if self.verify_samples < 0:
            out.append(Problem.of("verify_samples", "must be >= 0", self.verify_samples))
        return out

    def validate(self) -> None:
        raise_problems("cache build settings", self.problems(), "see `vggtctl cache build --help`")


@dataclass
class BuildResult:
    """What a build did (rank 0's view of the whole job in a multi-process build)."""

    cache_dir: str
    samples: int
    skipped_missing: list[str]
    already_cached: int
    computed: int
    passes: int
    bytes_written: int
    estimated_bytes: int
    free_bytes: int
    spec: dict[str, Any] | None
    world_size: int = 1
    dry_run: bool = False
    verify: dict[str, Any] | None = None
    timings_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _existing_parent(path: Path) -> Path:
    p = path.resolve()
    while not p.exists():
        p = p.parent
    return p


def check_cache_location(cache_dir: Path, samples: list[CacheSample]) -> None:
    """The cache lives in its own directory, never in a folder that holds dataset frames."""
    root = cache_dir.resolve()
    folders = {f.parent.resolve() for s in samples[:1000] for f in s.frames}
    if root in folders:
        raise UsageError(
            f"--cache-dir {cache_dir} is a folder of dataset images",
            "put the cache in its own directory, e.g. --cache-dir ./vggt_cache",
        )


def select_samples(config: BuildConfig) -> tuple[list[CacheSample], list[str]]:
    """The samples to build and the ids skipped for missing frames (or fail listing them)."""
    samples = read_samples(config.data, config.image_root)
    if config.max_samples is not None:
        samples = samples[: config.max_samples]
    bad = [(s, missing_frames(s.frames)) for s in samples]
    bad = [(s, m) for s, m in bad if m]
    if bad and config.missing == "fail":
        names = sorted({str(p) for _, m in bad for p in m})
        shown = ", ".join(names[:_LISTED]) + (f" ... ({len(names)} in all)" if len(names) > _LISTED else "")
        raise InputError(
            f"{len(bad)} samples have missing or unreadable images: {shown}",
            "fix the paths (--image-root sets the folder relative paths start from) or pass --missing skip",
        )
    skipped = {s.id for s, _ in bad}
    return [s for s in samples if s.id not in skipped], sorted(skipped)


def estimate_bytes(samples: list[CacheSample], config: BuildConfig, channels: int) -> int:
    """Bytes the entries will take: the first frame's patch grid × channels × dtype size, per sample."""
    if not samples:
        return 0
    from vggtctl.data.preprocess import open_image, resized_size

    img = open_image(samples[0].frames[-1])
    new_w, new_h = resized_size(img.size[0], img.size[1], config.mode, config.image_width)
    height = min(new_h, config.image_width) if config.mode == "crop" else config.image_width
    width = new_w if config.mode == "crop" else config.image_width
    return len(samples) * entry_bytes((height // 14) * (width // 14), channels, config.dtype)


def _channels(config: BuildConfig) -> int:
    from vggtctl.models.vggt.config import get_config
    from vggtctl.services.model_loader import seeded_preset

    preset = config.preset or seeded_preset(config.model) or ("tiny" if config.model == "tiny" else "vggt-1b")
    return 2 * get_config(preset).embed_dim


def build_cache(config: BuildConfig, progress: Progress = NULL_PROGRESS) -> BuildResult:
    """Build (or complete) a cache; see the module docstring for the phases.

    Raises:
        ConfigError: Bad settings (all listed).
        InputError: Bad data file, missing frames (``missing="fail"``), a model that is not VGGT-shaped,
            a cache of a newer format version.
        DiskSpaceError: The estimated size exceeds the free space.
        CacheLockedError: Another build writes this cache.
    """
    config.validate()
    info = dist_info()
    cache = CacheDir(config.cache_dir)
    if cache.exists():
        cache.read_header()  # refuses newer formats before any work
    samples, skipped = select_samples(config)
    check_cache_location(config.cache_dir, samples)
    estimated = estimate_bytes(samples, config, _channels(config))
    free = shutil.disk_usage(_existing_parent(config.cache_dir)).free
    result = BuildResult(
        cache_dir=str(config.cache_dir),
        samples=len(samples),
        skipped_missing=skipped,
        already_cached=0,
        computed=0,
        passes=0,
        bytes_written=0,
        estimated_bytes=estimated,
        free_bytes=free,
        spec=None,
        world_size=info.world_size,
        dry_run=config.dry_run,
    )
    if config.dry_run:
        return result
    if estimated > free:
        raise DiskSpaceError(
            f"the cache needs about {estimated / 2**30:.2f} GiB but {config.cache_dir} has "
            f"{free / 2**30:.2f} GiB free",
            "free space, pick another --cache-dir, use --max-samples, --image-width 518 or a smaller --dtype",
        )
    from .worker import run_build

    return run_build(config, samples, cache, result, progress)


def frame_hashes(
    samples: list[CacheSample], progress: Progress = NULL_PROGRESS
) -> dict[str, tuple[str, ...]]:
    """Sample id → ordered sha256 of its frames' bytes (each file hashed once)."""
    task = progress.task("hashing frames", total=len(samples))
    out = {}
    for s in samples:
        out[s.id] = tuple(frame_sha256(f) for f in s.frames)
        task.advance()
    task.close()
    return out


def new_build_id() -> str:
    return uuid.uuid4().hex[:12]
