"""`cache build` on the tiny VGGT and generated episodes: values, sharing, keys, resume, bad input."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.helpers_vln import WIDTH, write_data_file, write_episode
from vggtctl.errors import ConfigError, InputError, UsageError
from vggtctl.services.vlncache.build import BuildConfig, build_cache, estimate_bytes
from vggtctl.services.vlncache.encode import FeatureEncoder
from vggtctl.services.vlncache.entries import decode_entry, entry_bytes
from vggtctl.services.vlncache.layout import CacheDir
from vggtctl.services.vlncache.lock import CacheLockedError, cache_lock
from vggtctl.services.vlncache.records import CacheSample, history_indices, read_samples
from vggtctl.services.vlncache.spec import TOLERANCE, CacheSpec
from vggtctl.services.vlncache.worker import load_for_spec, make_spec


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model is overhead-bound: threads only contend
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 11-step episode (samples of 1..9 frames, then two 9-frame linspace samples) as a JSON array."""
    root = tmp_path_factory.mktemp("vln")
    frames = write_episode(root / "images" / "ep1", 11, seed=1)
    return write_data_file(root / "train.json", {"ep1": frames})


def config(data: Path, cache_dir: Path, **kw: object) -> BuildConfig:
    settings: dict = {"model": "tiny", "image_width": WIDTH, "device": "cpu", **kw}
    return BuildConfig(data=data, cache_dir=cache_dir, **settings)


@pytest.fixture(scope="module")
def built_fp32(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache_dir = tmp_path_factory.mktemp("c32") / "cache"
    result = build_cache(config(dataset, cache_dir, dtype="fp32"))
    assert (result.samples, result.computed, result.already_cached) == (11, 11, 0)
    # Samples 0..8 are prefixes of one another: one streaming pass; 9 and 10 need their own.
    assert result.passes == 3
    return cache_dir


@pytest.fixture(scope="module")
def encoder() -> FeatureEncoder:
    model, compute = load_for_spec("tiny", None, None, "cpu", "fp32")
    return FeatureEncoder(model, make_spec(model, compute, 22, WIDTH, "crop", "fp32", "streaming"))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def test_cached_values_equal_the_live_causal_pass_for_1_to_9_frames(
    built_fp32: Path, dataset: Path, encoder: FeatureEncoder
) -> None:
    cache = CacheDir(built_fp32)
    rows = {sid: r for (_, sid), r in cache.rows().items()}
    lengths = set()
    for sample in read_samples(dataset):
        row = rows[sample.id]
        stored, grid = decode_entry(cache.entry_path(row.key))
        live, live_grid = encoder.causal(sample.frames)  # the masked full pass, not the stream
        assert stored.dtype == torch.float32 and stored.shape == (12, 128) and grid == live_grid == (3, 4)
        assert rel(stored, live) <= TOLERANCE["fp32"], sample.id
        lengths.add(len(sample.frames))
    assert lengths == set(range(1, 10))


def test_bf16_storage_is_within_bf16_precision(
    dataset: Path, tmp_path: Path, encoder: FeatureEncoder
) -> None:
    data = tmp_path / "few.json"
    records = json.loads(dataset.read_text())
    data.write_text(
        json.dumps([{**r, "images": [str(dataset.parent / p) for p in r["images"]]} for r in records[8:10]])
    )
    build_cache(config(data, tmp_path / "cache", dtype="bf16"))
    cache = CacheDir(tmp_path / "cache")
    for row in cache.rows().values():
        stored, _ = decode_entry(cache.entry_path(row.key))
        live, _ = encoder.causal([Path(f) for f in row.frames])
        assert stored.dtype == torch.bfloat16
        assert 0 < rel(stored, live) <= TOLERANCE["bf16"]


def test_per_image_entries_differ_and_are_labelled(dataset: Path, built_fp32: Path, tmp_path: Path) -> None:
    result = build_cache(config(dataset, tmp_path / "cache", dtype="fp32", history="per-image"))
    assert result.spec["history"] == "per-image"
    per_image = CacheDir(tmp_path / "cache")
    assert per_image.current_spec().history == "per-image"
    streaming = {sid: r for (_, sid), r in CacheDir(built_fp32).rows().items()}
    for (_, sid), row in per_image.rows().items():
        a, _ = decode_entry(per_image.entry_path(row.key))
        b, _ = decode_entry(CacheDir(built_fp32).entry_path(streaming[sid].key))
        if len(row.frames) == 1:
            assert rel(a, b) <= 1e-5  # no history: the same value
        else:
            assert rel(a, b) > 1e-2, sid
    # One single-frame pass per distinct current frame.
    assert result.passes == 11


def test_key_depends_on_content_and_spec_not_on_paths(
    dataset: Path, built_fp32: Path, tmp_path: Path
) -> None:
    spec = CacheSpec(weights_sha256="a" * 64, preset="tiny")
    frames = ["1" * 64, "2" * 64, "3" * 64]
    key = spec.key(frames)
    changed = [
        dataclasses.replace(spec, weights_sha256="b" * 64),
        dataclasses.replace(spec, layer=21),
        dataclasses.replace(spec, image_width=518),
        dataclasses.replace(spec, dtype="fp16"),
        dataclasses.replace(spec, mode="pad"),
        dataclasses.replace(spec, history="per-image"),
    ]
    assert len({key, *(s.key(frames) for s in changed)}) == 7
    assert spec.key(frames[::-1]) != key and spec.key(frames[:2]) != key
    assert spec.key(list(frames)) == key

    # Moving the whole dataset (new folder, renamed files) keeps every entry: keys are content hashes.
    moved = tmp_path / "moved"
    shutil.copytree(dataset.parent / "images" / "ep1", moved / "other_name")
    for p in (moved / "other_name").iterdir():
        p.rename(p.with_name("renamed_" + p.name))
    records = json.loads(dataset.read_text())
    for r in records:
        r["images"] = [str(moved / "other_name" / ("renamed_" + Path(p).name)) for p in r["images"]]
    data = tmp_path / "moved.json"
    data.write_text(json.dumps(records))
    cache_dir = tmp_path / "cache"
    shutil.copytree(built_fp32, cache_dir)
    # Same ids, same content: nothing to compute.
    again = build_cache(config(data, cache_dir, dtype="fp32"))
    assert (again.already_cached, again.computed, again.bytes_written) == (11, 0, 0)


def test_history_rule_and_data_formats(dataset: Path, tmp_path: Path) -> None:
    assert history_indices(0) == [0]
    assert history_indices(8) == list(range(9))
    assert history_indices(10) == [0, 1, 2, 3, 5, 6, 7, 8, 10]  # np.linspace(0, 10, 9, dtype=int)
    from_json = read_samples(dataset)
    from_folders = read_samples(dataset.parent / "images")
    assert [s.frames for s in from_json] == [s.frames for s in from_folders]
    assert from_json[10].id == "ep1/step_0010_stop.png"
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in json.loads(dataset.read_text())))
    assert [s.frames for s in read_samples(jsonl, dataset.parent)] == [s.frames for s in from_json]


def test_malformed_records_are_listed_with_file_and_line(tmp_path: Path) -> None:
    data = tmp_path / "bad.json"
    data.write_text('[\n {"id": "a", "images": ["x.png"]},\n {"id": "b"},\n {"images": ["y.png"]}\n]\n')
    with pytest.raises(InputError) as e:
        read_samples(data)
    assert (
        f"{data}:3: record 'b'" in e.value.message and f"{data}:4: missing or empty 'id'" in e.value.message
    )
    lines = tmp_path / "bad.jsonl"
    lines.write_text('{"id": "a", "images": ["x.png"]}\n{"id": "a", "images": \n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: invalid JSON"):
        read_samples(lines)


def test_missing_images_are_listed_then_skipped_by_flag(dataset: Path, tmp_path: Path) -> None:
    records = json.loads(dataset.read_text())[:3]
    records[1]["images"] = ["images/ep1/nope_1.png"]
    data = dataset.parent / "missing.json"
    data.write_text(json.dumps(records))
    with pytest.raises(InputError, match="1 samples have missing or unreadable images: .*nope_1.png") as e:
        build_cache(config(data, tmp_path / "cache"))
    assert "--missing skip" in (e.value.hint or "")
    assert not (tmp_path / "cache").exists()  # nothing written
    result = build_cache(config(data, tmp_path / "cache", missing="skip"))
    assert result.skipped_missing == [records[1]["id"]] and result.computed == 2


def test_refusals_leave_nothing_half_written(dataset: Path, built_fp32: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        build_cache(config(dataset, tmp_path / "c", image_width=600, dtype="fp8", history="live"))
    assert all(f in e.value.message for f in ("image_width=600", "dtype='fp8'", "history='live'"))
    # A second build on a locked cache.
    cache_dir = tmp_path / "locked"
    shutil.copytree(built_fp32, cache_dir)
    with (
        cache_lock(CacheDir(cache_dir).lock_path),
        pytest.raises(CacheLockedError, match=r"being written by pid"),
    ):
        build_cache(config(dataset, cache_dir, dtype="fp32", skip_existing=False))
    # A cache of a newer format version.
    header = json.loads((cache_dir / "cache.json").read_text())
    (cache_dir / "cache.json").write_text(json.dumps({**header, "format_version": 99}))
    with pytest.raises(InputError, match="format version 99"):
        build_cache(config(dataset, cache_dir))
    # A model that is not VGGT-shaped.
    from safetensors.torch import save_file

    save_file({"encoder.weight": torch.zeros(4, 4)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(Exception, match="(?i)key|vggt") as e:
        build_cache(
            dataclasses.replace(config(dataset, tmp_path / "c2"), model=str(tmp_path / "other.safetensors"))
        )
    assert getattr(e.value, "hint", None)
    assert not list((tmp_path / "c2").glob("entries/*"))
    # The cache inside a folder of dataset frames.
    with pytest.raises(UsageError, match="is a folder of dataset images"):
        build_cache(config(dataset, dataset.parent / "images" / "ep1", dry_run=True))


def test_dry_run_estimate_matches_the_bytes_written(dataset: Path, built_fp32: Path, tmp_path: Path) -> None:
    result = build_cache(config(dataset, tmp_path / "cache", dtype="fp32", dry_run=True))
    assert result.dry_run and result.samples == 11 and result.free_bytes > 0
    assert not (tmp_path / "cache").exists()
    written = sum(r.bytes for r in CacheDir(built_fp32).rows().values())
    assert abs(result.estimated_bytes - written) / written < 0.1
    # 640×480 → 490×644, [1610, 2048] in bf16 ≈ 6.3 MiB per sample on VGGT-1B.
    assert round(entry_bytes(35 * 46, 2048, "bf16") / 2**20, 2) == 6.29
    big = tmp_path / "big"
    write_episode(big, 1, seed=3, size=(640, 480))
    samples = [CacheSample("s", tuple(big.iterdir()))]
    assert estimate_bytes(samples, BuildConfig(data=big, cache_dir=tmp_path), 2048) == entry_bytes(
        1610, 2048, "bf16"
    )


def test_dry_run_estimate_reads_the_preset_of_a_seeded_source(dataset: Path, tmp_path: Path) -> None:
    """``seeded:tiny`` is tiny-shaped (128 channels per token, not VGGT-1B's 2,048): it was estimated as 1B."""
    tiny = build_cache(config(dataset, tmp_path / "a", dry_run=True)).estimated_bytes
    seeded = build_cache(config(dataset, tmp_path / "b", model="seeded:tiny", dry_run=True)).estimated_bytes
    big = build_cache(config(dataset, tmp_path / "c", model="seeded:vggt-1b", dry_run=True)).estimated_bytes
    assert seeded == tiny and big > 4 * tiny
