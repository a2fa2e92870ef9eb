"""`cache verify|stats|prune` and the reader, on a small tiny-model cache."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from tests.helpers_cli import run_cli
from tests.helpers_vln import WIDTH, write_data_file, write_episode
from vggtctl.errors import UsageError
from vggtctl.services.vlncache.build import BuildConfig, build_cache
from vggtctl.services.vlncache.layout import CacheDir
from vggtctl.services.vlncache.maintain import cache_stats, prune_cache
from vggtctl.services.vlncache.reader import CacheMissError, CacheSpecWarning, open_cache
from vggtctl.services.vlncache.records import read_samples
from vggtctl.services.vlncache.verify import VerifyConfig, verify_cache


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two episodes of 3 frames (6 samples, 2 passes), cached in bf16."""
    root = tmp_path_factory.mktemp("vlnv")
    episodes = {f"ep{k}": write_episode(root / "images" / f"ep{k}", 3, seed=10 + k) for k in (1, 2)}
    data = write_data_file(root / "train.json", episodes)
    cache_dir = root / "cache"
    build_cache(BuildConfig(data=data, cache_dir=cache_dir, model="tiny", image_width=WIDTH, device="cpu"))
    return data, cache_dir


@pytest.fixture
def copy(built: tuple[Path, Path], tmp_path: Path) -> Path:
    shutil.copytree(built[1], tmp_path / "cache")
    return tmp_path / "cache"


def _entry(cache_dir: Path, sample_id: str) -> Path:
    cache = CacheDir(cache_dir)
    row = next(r for (_, sid), r in cache.rows().items() if sid == sample_id)
    return cache.entry_path(row.key)


def test_verify_catches_a_flipped_byte_and_a_truncated_file_and_fixes_them(copy: Path) -> None:
    clean = verify_cache(VerifyConfig(cache_dir=copy, samples=2, device="cpu"))
    assert clean.ok and clean.checked_integrity == 6 and clean.recomputed == 2
    # the live recompute is rounded to the stored bf16: equal, or one bf16 step apart where the float sums
    # ran in another order (seen both ways: 0.0 in a fresh clone, > 0 in another checkout)
    assert clean.worst_rel_error is not None and 0 <= clean.worst_rel_error <= clean.tolerance == 2.0**-7

    flipped, cut = _entry(copy, "ep1/step_0001_move_forward.png"), _entry(copy, "ep2/step_0002_stop.png")
    data = bytearray(flipped.read_bytes())
    data[-7] ^= 0x40  # a bit in the values: only the checksum can tell
    flipped.write_bytes(bytes(data))
    cut.write_bytes(cut.read_bytes()[:-100])
    report = verify_cache(VerifyConfig(cache_dir=copy, samples=0, recompute=False))
    problems = {b["id"]: b["problem"] for b in report.bad}
    assert not report.ok
    assert "sha256 differs" in problems["ep1/step_0001_move_forward.png"]
    assert "truncated" in problems["ep2/step_0002_stop.png"]

    ran = run_cli("cache", "verify", "--cache-dir", copy, "--no-recompute", "--json")
    assert ran.exit_code == 1 and len(json.loads(ran.stdout)["bad"]) == 2

    fixed = verify_cache(VerifyConfig(cache_dir=copy, samples=None, fix=True, device="cpu"))
    assert sorted(fixed.fixed) == sorted(problems)
    assert verify_cache(VerifyConfig(cache_dir=copy, samples=None, device="cpu")).ok


def test_verify_recompute_catches_a_wrong_value_with_a_valid_checksum(copy: Path) -> None:
    from vggtctl.services.vlncache.entries import decode_entry, encode_entry
    from vggtctl.services.vlncache.layout import write_entry

    cache = CacheDir(copy)
    rows = cache.rows()
    (spec_id, sid), row = sorted(rows.items())[0]
    value, grid = decode_entry(cache.entry_path(row.key))
    size, sha = write_entry(cache.entry_path(row.key), encode_entry(value * 1.1, grid, row.key))
    from dataclasses import replace

    rows[(spec_id, sid)] = replace(row, bytes=size, sha256=sha)
    cache.write_manifest(rows.values())
    report = verify_cache(VerifyConfig(cache_dir=copy, samples=None, device="cpu"))
    assert [b["id"] for b in report.bad] == [sid]
    assert "recomputed value differs" in report.bad[0]["problem"]


def test_reader_hits_equal_live_and_a_spec_mismatch_warns_once(built: tuple[Path, Path]) -> None:
    import vggtctl

    data, cache_dir = built
    model = vggtctl.load_model("tiny")
    reader = open_cache(cache_dir, model, image_width=WIDTH)
    samples = read_samples(data)
    for s in samples:
        value = reader.lookup(s)
        assert value is not None and value.shape == (12, 128) and value.dtype == torch.bfloat16
    assert reader.lookup([str(f) for f in samples[0].frames]) is not None  # plain paths work too
    assert reader.stats() == {"hits": 7, "misses": 0, "hit_rate": 1.0}
    # Live value of the last sample: the causal pass's last frame, patch tokens.
    frames = torch.from_numpy(
        __import__("vggtctl.data.preprocess", fromlist=["load_images"]).load_images(
            samples[-1].frames, target_size=WIDTH
        )[0]
    )
    with torch.no_grad():
        live = model.aggregator(frames, layers=(22,), causal=True)[0][22][0, -1, 5:]
    got = reader.lookup(samples[-1]).float()
    assert float((got - live).abs().max() / live.abs().max()) <= 2.0**-7

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        other = open_cache(cache_dir, model, image_width=WIDTH, layer=21)
        assert all(other.lookup(s) is None for s in samples)
    assert [str(w.message).count("layer: 22 != 21") for w in caught if w.category is CacheSpecWarning] == [1]
    assert other.stats()["misses"] == 6
    with pytest.warns(CacheSpecWarning, match="image_width: 56 != 518"):
        strict = open_cache(cache_dir, model, image_width=518, required=True)
    with pytest.raises(CacheMissError, match="no cached VGGT features"):
        strict.lookup(samples[0])


def test_stats_coverage_and_prune(copy: Path, built: tuple[Path, Path], tmp_path: Path) -> None:
    data = built[0]
    stats = cache_stats(copy, data)
    assert (stats.entries, stats.entry_files, stats.coverage["cached"], stats.coverage["samples"]) == (
        6,
        6,
        6,
        6,
    )
    assert stats.spec["layer"] == 22 and stats.spec["image_width"] == WIDTH and stats.spec["dtype"] == "bf16"
    ran = run_cli("cache", "stats", "--cache-dir", copy, "--data", data)
    assert ran.exit_code == 0 and "coverage" in ran.stdout and "6/6" in ran.stdout

    # A data file with one episode only: prune lists the other episode's entries, removes them with --yes.
    subset = tmp_path / "subset.json"
    subset.write_text(json.dumps([r for r in json.loads(data.read_text()) if r["id"].startswith("ep1/")]))
    shutil.copytree(data.parent / "images", tmp_path / "images")
    plan = prune_cache(copy, subset, dry_run=True)
    assert len(plan.remove_files) == 3 and plan.remove_rows == 3 and not plan.removed
    with pytest.raises(UsageError, match="prune would remove 3 entries") as refused:
        prune_cache(copy, subset)
    assert "--yes" in (refused.value.hint or "")
    ran = run_cli("cache", "prune", "--cache-dir", copy, "--data", subset, "--yes", "--json")
    assert ran.exit_code == 0 and json.loads(ran.stdout)["removed"] is True
    after = cache_stats(copy, data)
    assert (after.entries, after.entry_files, after.coverage["cached"]) == (3, 3, 3)
    assert verify_cache(VerifyConfig(cache_dir=copy, recompute=False)).ok
