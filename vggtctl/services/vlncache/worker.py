"""What each rank of a cache build runs: the model, the keys, its shard of the passes, its manifest.

Single-process builds run the same code with rank 0 of 1. In a multi-process job (torchrun or the
shared launcher) rank 0 takes the cache lock and tells the others whether it got it; passes are split
round-robin by rank (:func:`vggtctl.runtime.dist.shard`), each rank appends to its own shard manifest,
and rank 0 merges them once every rank is done. A killed build leaves whole entries and complete shard
rows only, which the next build folds in and skips.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from vggtctl.errors import InputError, UsageError
from vggtctl.progress import Progress
from vggtctl.runtime import collective
from vggtctl.runtime.dist import dist_info, shard

from .build import BuildConfig, BuildResult, frame_hashes, new_build_id
from .entries import decode_entry, encode_entry
from .layout import CacheDir, EntryRow, append_row, write_entry
from .lock import CacheLockedError, cache_lock
from .plan import Pass, plan_passes
from .records import CacheSample
from .spec import CacheSpec


def load_for_spec(
    model: str, preset: str | None, revision: str | None, device: str, dtype: str, local_rank: int = 0
) -> tuple[Any, str]:
    """Load the model for a build or a check; returns (model, compute dtype name).

    On CPU the model computes in float32; on CUDA in the storage dtype (bf16/fp16, as JanusVLN's
    autocast), so GPU values carry that dtype's rounding from the start.

    Raises:
        InputError: The checkpoint is not VGGT-shaped.
    """
    from vggtctl.runtime.device import resolve_device
    from vggtctl.services.model_loader import load_model

    where = resolve_device(device)
    if where == "cuda":
        where = f"cuda:{local_rank}"
    compute = "fp32" if where == "cpu" or dtype == "fp32" else dtype
    loaded = load_model(
        model, preset=preset, device=where, dtype=None if compute == "fp32" else compute, revision=revision
    )
    if getattr(loaded, "aggregator", None) is None or not hasattr(loaded.aggregator, "stream"):
        raise InputError(
            f"{model} did not load as a VGGT model (no aggregator)",
            "pass VGGT weights: facebook/VGGT-1B, a checkpoint of it, or tiny",
        )
    return loaded, compute


def _model_source(model: Any, config: BuildConfig, spec: CacheSpec) -> dict[str, Any]:
    """What the header records about the model; a quantized artifact adds its format, base and method."""
    from vggtctl.services.model_loader import provenance_of

    source: dict[str, Any] = {"source": config.model, "revision": config.revision, "preset": spec.preset}
    prov = provenance_of(model)
    if prov is not None and prov.quantization is not None:
        d = prov.to_dict()
        source.update(format=d["format"], base=d["base"], quantization=d["quantization"])
    return source


def make_spec(
    model: Any, compute: str, layer: int, image_width: int, mode: str, dtype: str, history: str
) -> CacheSpec:
    """The spec of values this model computes with these settings (layer made non-negative)."""
    from vggtctl.models.vggt.inputs import normalize_layers
    from vggtctl.services.model_loader import provenance_of

    depth = model.aggregator.depth
    if not -depth <= layer < depth:
        raise UsageError(f"layer {layer} does not exist in a {depth}-layer VGGT", "JanusVLN reads --layer 22")
    prov = provenance_of(model)
    if prov is None or not prov.sha256:
        raise InputError("the model has no recorded weights sha256", "load it with vggtctl.load_model")
    return CacheSpec(
        weights_sha256=prov.sha256,
        preset=prov.preset or "",
        layer=normalize_layers((layer,), depth)[0],
        image_width=image_width,
        mode=mode,
        compute_dtype=compute,
        dtype=dtype,
        history=history,
    ).validate()


def _reusable(cache: CacheDir, row: EntryRow | None, key: str) -> bool:
    if row is None or row.key != key:
        return False
    path = cache.entry_path(key)
    return path.is_file() and path.stat().st_size == row.bytes


def _row(
    sample: CacheSample,
    spec: CacheSpec,
    key: str,
    path: Path,
    size: int,
    sha: str,
    value: Any,
    grid: tuple[int, int],
) -> EntryRow:
    return EntryRow(
        id=sample.id,
        spec=spec.spec_id,
        key=key,
        shape=(int(value.shape[0]), int(value.shape[1])),
        grid=grid,
        bytes=size,
        sha256=sha,
        frames=tuple(str(f) for f in sample.frames),
    )


def run_pass(
    encoder: Any, cache: CacheDir, spec: CacheSpec, p: Pass, keys: dict[str, str], rebuild: bool
) -> list[tuple[EntryRow, int]]:
    """Compute (or reuse) one pass's entries; returns their rows with the bytes newly written."""
    import hashlib

    out: list[tuple[EntryRow, int]] = []
    todo: dict[int, list[CacheSample]] = {}
    for t, samples in p.emit.items():
        for s in samples:
            path = cache.entry_path(keys[s.id])
            if not rebuild and path.is_file():  # same content under the same spec: the value is known
                with contextlib.suppress(InputError, OSError, ValueError, RuntimeError):
                    value, grid = decode_entry(path)
                    data = path.read_bytes()
                    out.append(
                        (
                            _row(
                                s,
                                spec,
                                keys[s.id],
                                path,
                                len(data),
                                hashlib.sha256(data).hexdigest(),
                                value,
                                grid,
                            ),
                            0,
                        )
                    )
                    continue
            todo.setdefault(t, []).append(s)
    if not todo:
        return out
    values = encoder.stream(p.frames, sorted(todo))
    for t, samples in sorted(todo.items()):
        value, grid = values[t]
        for s in samples:
            path = cache.entry_path(keys[s.id])
            size, sha = write_entry(path, encode_entry(value, grid, keys[s.id]))
            out.append((_row(s, spec, keys[s.id], path, size, sha, value, grid), size))
    return out


def run_build(
    config: BuildConfig, samples: list[CacheSample], cache: CacheDir, result: BuildResult, progress: Progress
) -> BuildResult:
    """Phases after the dry-run checks, on every rank (see the module docstring)."""
    from .encode import FeatureEncoder

    info = dist_info()
    t0 = time.perf_counter()
    model, compute = load_for_spec(
        config.model, config.preset, config.revision, config.device, config.dtype, info.local_rank
    )
    collective.configure(str(next(model.parameters()).device))
    spec = make_spec(
        model, compute, config.layer, config.image_width, config.mode, config.dtype, config.history
    )
    result.spec = spec.to_dict()
    result.timings_s["load"] = round(time.perf_counter() - t0, 3)
    hashes = frame_hashes(samples, progress)
    keys = {s.id: spec.key(hashes[s.id]) for s in samples}
    with contextlib.ExitStack() as stack:
        failure = None
        if info.is_rank_zero:
            try:
                stack.enter_context(cache_lock(cache.lock_path))
                cache.write_header(spec, _model_source(model, config, spec))
                cache.merge_shards()  # what a killed build left behind
            except CacheLockedError as e:
                failure = (e.message, e.hint)
        failure = collective.broadcast(failure, info)
        if failure is not None:
            raise CacheLockedError(*failure)
        build_id = collective.broadcast(new_build_id(), info)
        rows = cache.rows()
        done = [
            s
            for s in samples
            if config.skip_existing and _reusable(cache, rows.get((spec.spec_id, s.id)), keys[s.id])
        ]
        done_ids = {s.id for s in done}
        todo = [s for s in samples if s.id not in done_ids]
        passes = plan_passes(todo, hashes, spec.history)
        mine = [passes[i] for i in shard(len(passes), info)]
        encoder = FeatureEncoder(model, spec)
        shard_file = cache.shard_path(build_id, info.rank)
        task = progress.task("encoding samples", total=sum(len(p.samples) for p in mine))
        t1 = time.perf_counter()
        computed = written = 0
        for p in mine:
            for row, size in run_pass(encoder, cache, spec, p, keys, rebuild=not config.skip_existing):
                append_row(shard_file, row)
                computed += 1
                written += size
                task.advance()
        task.close()
        result.timings_s["encode"] = round(time.perf_counter() - t1, 3)
        totals = collective.all_gather((computed, written), info)
        collective.barrier(info)
        if info.is_rank_zero:
            cache.merge_shards()
        collective.barrier(info)
    result.already_cached = len(done)
    result.computed = sum(c for c, _ in totals)
    result.bytes_written = sum(w for _, w in totals)
    result.passes = len(passes)
    if config.verify and info.is_rank_zero:
        from .verify import VerifyConfig, verify_cache

        report = verify_cache(
            VerifyConfig(
                cache_dir=config.cache_dir,
                samples=config.verify_samples,
                recompute=True,
                device=config.device,
            ),
            progress,
            model=model,
        )
        result.verify = report.to_dict()
    return result


def config_to_json(config: BuildConfig) -> dict[str, Any]:
    """A build config as plain JSON (what the launched ranks read)."""
    from dataclasses import asdict

    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}


def config_from_json(data: dict[str, Any]) -> BuildConfig:
    paths = {"data", "cache_dir", "image_root"}
    return BuildConfig(**{k: (Path(v) if k in paths and v is not None else v) for k, v in data.items()})


def main(argv: list[str]) -> int:
    """Rank entry point under the launcher: ``--config FILE.json --result FILE.json``.

    Every rank builds its shard; rank 0 writes the job's :class:`BuildResult` to ``--result``. Errors are
    printed as ``Error:``/``Hint:`` on stderr (the rank's log) and returned as the exit code.
    """
    import json
    import sys

    from vggtctl.errors import VggtctlError
    from vggtctl.utils.atomic import atomic_write_json

    from .build import build_cache

    args = dict(zip(argv[::2], argv[1::2], strict=False))
    config = config_from_json(json.loads(Path(args["--config"]).read_text()))
    info = dist_info()
    try:
        result = build_cache(config)
    except VggtctlError as e:
        print(f"Error: rank {info.rank}: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"Hint: {e.hint}", file=sys.stderr)
        return e.exit_code
    finally:
        collective.shutdown(info)
    if info.is_rank_zero and "--result" in args:
        atomic_write_json(Path(args["--result"]), result.to_dict())
    return 0
