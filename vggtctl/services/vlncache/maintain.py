"""``vggtctl cache stats`` and ``vggtctl cache prune``: what a cache holds, and removing what is stale.

An entry is kept by prune when a manifest row of the current spec references it and (with a data
file) that row's sample is in the data file with the same frame content. Everything else (entries of
other models/layers/preprocessing/modes, samples no longer in the data, orphans a killed build left) is
listed, and removed only with ``yes``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vggtctl.errors import UsageError

from .entries import frame_sha256, missing_frames
from .layout import ENTRIES, CacheDir
from .lock import cache_lock
from .records import read_samples


@dataclass
class CacheStats:
    cache_dir: str
    entries: int
    entry_files: int
    bytes: int
    spec: dict[str, Any]
    other_specs: int
    rows_other_specs: int
    coverage: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _entry_files(cache: CacheDir) -> list[Path]:
    root = cache.root / ENTRIES
    return sorted(root.glob("*/*/*.safetensors")) if root.is_dir() else []


def _data_keys(cache: CacheDir, data: Path, image_root: Path | None) -> dict[str, str | None]:
    """Sample id → its key under the current spec (``None`` when a frame is missing)."""
    spec = cache.current_spec()
    out: dict[str, str | None] = {}
    for s in read_samples(data, image_root):
        out[s.id] = None if missing_frames(s.frames) else spec.key([frame_sha256(f) for f in s.frames])
    return out


def cache_stats(cache_dir: Path, data: Path | None = None, image_root: Path | None = None) -> CacheStats:
    """Counts, bytes and the spec of a cache; with ``data``, how many of its samples are cached."""
    cache = CacheDir(cache_dir)
    spec = cache.current_spec()
    rows = cache.rows()
    mine = {sid: r for (s, sid), r in rows.items() if s == spec.spec_id}
    files = _entry_files(cache)
    stats = CacheStats(
        cache_dir=str(cache_dir),
        entries=len(mine),
        entry_files=len(files),
        bytes=sum(f.stat().st_size for f in files),
        spec=spec.to_dict(),
        other_specs=len(cache.specs()) - 1,
        rows_other_specs=len(rows) - len(mine),
    )
    if data is not None:
        keys = _data_keys(cache, data, image_root)
        hit = sum(1 for sid, k in keys.items() if k is not None and sid in mine and mine[sid].key == k)
        stats.coverage = {
            "data": str(data),
            "samples": len(keys),
            "cached": hit,
            "fraction": round(hit / len(keys), 6) if keys else 0.0,
        }
    return stats


@dataclass
class PrunePlan:
    cache_dir: str
    remove_files: list[str] = field(default_factory=list)
    remove_rows: int = 0
    bytes: int = 0
    removed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "remove_files": len(self.remove_files), "files": self.remove_files[:50]}


def prune_cache(
    cache_dir: Path,
    data: Path | None = None,
    image_root: Path | None = None,
    *,
    dry_run: bool = False,
    yes: bool = False,
) -> PrunePlan:
    """Remove entries not referenced by the current spec (and the data file, when given).

    Raises:
        UsageError: Something would be removed but neither ``dry_run`` nor ``yes`` was given.
        CacheLockedError: A build is writing the cache.
    """
    cache = CacheDir(cache_dir)
    spec = cache.current_spec()
    with cache_lock(cache.lock_path):
        rows = cache.merge_shards()
        keys = _data_keys(cache, data, image_root) if data is not None else None
        keep = {
            k: r
            for k, r in rows.items()
            if k[0] == spec.spec_id and (keys is None or keys.get(r.id) == r.key)
        }
        used = {r.key for r in keep.values()}
        files = [f for f in _entry_files(cache) if f.stem not in used]
        plan = PrunePlan(
            str(cache_dir),
            [str(f) for f in files],
            len(rows) - len(keep),
            sum(f.stat().st_size for f in files),
        )
        if dry_run or (not files and not plan.remove_rows):
            return plan
        if not yes:
            raise UsageError(
                f"prune would remove {len(files)} entries ({plan.bytes / 2**20:.3g} MiB) and "
                f"{plan.remove_rows} manifest rows",
                "look at the list with --dry-run, then pass --yes",
            )
        cache.write_manifest(keep.values())  # rows first: no row ever points at a removed file
        for f in files:
            f.unlink(missing_ok=True)
        cache.forget_specs(spec.spec_id)
        plan.removed = True
        return plan
