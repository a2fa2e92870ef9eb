"""``vggtctl cache verify``: every entry's integrity, and a live recompute of some samples.

Integrity (all entries): the file exists, its size is the manifest's, its safetensors header parses
and says the manifest's shape and dtype, its sha256 is the manifest's. Recompute (``samples`` random
entries of the current spec, seeded, or all): the frame-causal full pass, the reference path, rather
than the streaming one the build used, compared within the storage dtype's tolerance
(:data:`~.spec.TOLERANCE`). ``fix`` rebuilds every bad entry of the current spec from its frames.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vggtctl.errors import InputError
from vggtctl.progress import NULL_PROGRESS, Progress

from .entries import read_header, safetensors_dtype
from .layout import FEATURES, CacheDir, EntryRow, write_entry
from .lock import cache_lock
from .records import CacheSample
from .spec import TOLERANCE, CacheSpec


@dataclass
class VerifyConfig:
    """What to check: ``samples`` recomputed entries (``None`` = all), ``recompute`` off = integrity only."""

    cache_dir: Path
    samples: int | None = 8
    recompute: bool = True
    fix: bool = False
    device: str = "auto"
    model: str | None = None
    seed: int = 0


@dataclass
class VerifyReport:
    cache_dir: str
    entries: int
    checked_integrity: int
    recomputed: int
    tolerance: float
    worst_rel_error: float | None
    bad: list[dict[str, str]] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not [b for b in self.bad if b["id"] not in self.fixed]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def integrity_problem(cache: CacheDir, row: EntryRow, dtype: str) -> str | None:
    """Why an entry is bad, or ``None`` when it is whole and matches its manifest row."""
    path = cache.entry_path(row.key)
    if not path.is_file():
        return "entry file missing"
    size = path.stat().st_size
    if size != row.bytes:
        return f"size {size} bytes, manifest says {row.bytes} (truncated or rewritten)"
    try:
        header = read_header(path)
    except InputError as e:
        return e.message.split(": ", 1)[-1]
    info = header.get(FEATURES)
    if not isinstance(info, dict) or list(info.get("shape", [])) != list(row.shape):
        return f"header shape {info.get('shape') if isinstance(info, dict) else None}, manifest says {list(row.shape)}"
    if info.get("dtype") != safetensors_dtype(dtype):
        return f"header dtype {info.get('dtype')}, the cache stores {safetensors_dtype(dtype)}"
    if hashlib.sha256(path.read_bytes()).hexdigest() != row.sha256:
        return "sha256 differs from the manifest (bytes changed)"
    return None


def rel_error(a: Any, b: Any) -> float:
    """max |a - b| / max |b| in float64."""
    a64, b64 = a.double(), b.double()
    return float((a64 - b64).abs().max() / b64.abs().max().clamp_min(1e-30))


def verify_cache(config: VerifyConfig, progress: Progress = NULL_PROGRESS, model: Any = None) -> VerifyReport:
    """Check a cache (see the module docstring); ``report.ok`` is False when anything stays bad.

    Raises:
        InputError: Not a cache, a newer format, or the recompute model is not the one the cache names.
    """
    cache = CacheDir(config.cache_dir)
    spec = cache.current_spec()
    specs = cache.specs()
    rows = cache.rows()
    report = VerifyReport(str(config.cache_dir), len(rows), 0, 0, TOLERANCE[spec.dtype], None)
    bad: dict[str, str] = {}
    task = progress.task("checking entries", total=len(rows))
    for (spec_id, sid), row in sorted(rows.items()):
        dtype = specs.get(spec_id, spec).dtype
        problem = integrity_problem(cache, row, dtype)
        report.checked_integrity += 1
        if problem is not None and spec_id == spec.spec_id:
            bad[sid] = problem
        elif problem is not None:
            report.bad.append({"id": sid, "spec": spec_id, "problem": problem})
        task.advance()
    task.close()
    current = sorted((r for (s, _), r in rows.items() if s == spec.spec_id), key=lambda r: r.id)
    encoder = None
    if config.recompute or (config.fix and bad):
        encoder = _encoder(cache, spec, config, model)
    if config.recompute and current:
        assert encoder is not None
        whole = [r for r in current if r.id not in bad]
        count = len(whole) if config.samples is None else min(config.samples, len(whole))
        picked = sorted(random.Random(config.seed).sample(whole, count), key=lambda r: r.id)
        _recompute(cache, encoder, spec, picked, report, bad, progress)
    for sid, problem in sorted(bad.items()):
        report.bad.append({"id": sid, "spec": spec.spec_id, "problem": problem})
    if config.fix and bad:
        assert encoder is not None
        report.fixed = _fix(cache, encoder, spec, {r.id: r for r in current}, sorted(bad))
    return report


def _encoder(cache: CacheDir, spec: CacheSpec, config: VerifyConfig, model: Any) -> Any:
    from .encode import FeatureEncoder
    from .worker import load_for_spec, make_spec

    if model is None:
        named = cache.model_source(spec.spec_id) or {}
        source = config.model or named.get("source")
        if not source:
            raise InputError(
                "the cache does not name its model", "pass --model (the weights it was built with)"
            )
        model, compute = load_for_spec(
            source, named.get("preset"), named.get("revision"), config.device, spec.dtype
        )
    else:
        compute = spec.compute_dtype
    mine = make_spec(model, compute, spec.layer, spec.image_width, spec.mode, spec.dtype, spec.history)
    if mine.spec_id != spec.spec_id:
        raise InputError(
            "the recompute model/settings differ from the cache's: " + "; ".join(spec.differences(mine)),
            "pass the --model the cache was built with (and the same --device class: CPU values are fp32-computed)",
        )
    return FeatureEncoder(model, spec)


def _recompute(
    cache: CacheDir,
    encoder: Any,
    spec: CacheSpec,
    rows: list[EntryRow],
    report: VerifyReport,
    bad: dict[str, str],
    progress: Progress,
) -> None:
    from .entries import decode_entry

    tol = TOLERANCE[spec.dtype]
    task = progress.task("recomputing samples", total=len(rows))
    for row in rows:
        frames = tuple(Path(f) for f in row.frames)
        try:
            live, grid = encoder.causal(frames)
        except InputError as e:
            bad[row.id] = f"cannot recompute: {e.message}"
            continue
        stored, stored_grid = decode_entry(cache.entry_path(row.key))
        err = rel_error(stored, live) if stored.shape == live.shape else float("inf")
        report.recomputed += 1
        report.worst_rel_error = max(report.worst_rel_error or 0.0, err)
        if err > tol or grid != stored_grid:
            bad[row.id] = f"recomputed value differs: rel. error {err:.3g} > {tol:.3g}"
        task.advance()
    task.close()


def _fix(
    cache: CacheDir, encoder: Any, spec: CacheSpec, rows: dict[str, EntryRow], ids: list[str]
) -> list[str]:
    """Recompute bad entries of the current spec and rewrite them and their manifest rows."""
    from .entries import encode_entry, frame_sha256

    fixed = []
    with cache_lock(cache.lock_path):
        merged = cache.merge_shards()
        for sid in ids:
            row = rows.get(sid)
            if row is None:
                continue
            sample = CacheSample(sid, tuple(Path(f) for f in row.frames))
            try:
                key = spec.key([frame_sha256(f) for f in sample.frames])
                value, grid = encoder.causal(sample.frames)
            except (InputError, OSError):
                continue
            size, sha = write_entry(cache.entry_path(key), encode_entry(value, grid, key))
            merged[(spec.spec_id, sid)] = EntryRow(
                sid,
                spec.spec_id,
                key,
                (int(value.shape[0]), int(value.shape[1])),
                grid,
                size,
                sha,
                row.frames,
            )
            fixed.append(sid)
        cache.write_manifest(merged.values())
    return fixed
