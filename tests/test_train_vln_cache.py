"""train-vln --cache-dir: cached and live VGGT features give the same loss; a foreign cache misses; --cache-required."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers_cli import run_cli
from tests.vln_fixtures import SMALL, tiny_qwen, trajectories  # noqa: F401 - fixtures
from vggtctl.services.vlncache.spec import TOLERANCE

WIDTH = "112"  # SMALL's image_width


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny models are overhead-bound: on a shared CPU more threads only contend
    yield
    torch.set_num_threads(before)


def _build(data: Path, vggt: Path, cache: Path, *extra: str):  # noqa: ANN202
    r = run_cli("cache", "build", "--data", data, "--cache-dir", cache, "--model", vggt, "--device", "cpu",
                "--dtype", "fp32", "--json", *extra)  # fmt: skip
    assert r.exit_code == 0, r.stderr
    return r


def _train(tiny_qwen: Path, data: Path, vggt: Path, out: Path, *extra: str):  # noqa: ANN202
    return run_cli(
        "train-vln", "--data", data, "--model", tiny_qwen, "--vggt", vggt, "--output-dir", out,
        "--max-steps", 1, "--device", "cpu", "--json", *extra, *SMALL, "batch_size=2", "grad_accum=1",
    )  # fmt: skip


def _record(run: Path) -> dict:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[0])


@pytest.fixture(scope="module")
def live(tiny_qwen: Path, trajectories: Path, tiny_checkpoint: Path, tmp_path_factory) -> dict:
    run = tmp_path_factory.mktemp("vlncache") / "live"
    r = _train(tiny_qwen, trajectories, tiny_checkpoint, run)
    assert r.exit_code == 0, r.stderr
    return _record(run)


def test_cached_and_live_features_give_the_same_loss(
    tiny_qwen: Path,
    trajectories: Path,
    tiny_checkpoint: Path,
    live: dict,
    tmp_path: Path,
) -> None:
    _build(trajectories, tiny_checkpoint, tmp_path / "c", "--image-width", WIDTH)
    r = _train(tiny_qwen, trajectories, tiny_checkpoint, tmp_path / "run", "--cache-dir", tmp_path / "c",
               "--cache-required")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    cached = _record(tmp_path / "run")
    assert cached["cache_hit_ratio"] == 1.0 and live["cache_hit_ratio"] == 0.0
    # fp32 storage: the same values up to the model's own fp32 parity (stream vs. causal pass).
    assert cached["loss"] == pytest.approx(live["loss"], rel=10 * TOLERANCE["fp32"])
    assert cached["grad_norm"] == pytest.approx(live["grad_norm"], rel=1e-3)


@pytest.mark.parametrize("foreign", [["--layer", "1"], ["--image-width", "56"]], ids=["layer", "width"])
def test_a_cache_of_another_layer_or_width_misses_with_a_warning(
    tiny_qwen: Path, trajectories: Path, tiny_checkpoint: Path, live: dict, tmp_path: Path,
    foreign: list[str],
) -> None:  # fmt: skip
    extra = foreign if "--image-width" in foreign else [*foreign, "--image-width", WIDTH]
    _build(trajectories, tiny_checkpoint, tmp_path / "c", "--max-samples", "8", *extra)
    with pytest.warns(UserWarning, match="another spec"):
        r = _train(tiny_qwen, trajectories, tiny_checkpoint, tmp_path / "run", "--cache-dir", tmp_path / "c")
    assert r.exit_code == 0, r.stderr
    record = _record(tmp_path / "run")
    assert record["cache_hit_ratio"] == 0.0
    assert record["loss"] == pytest.approx(live["loss"], rel=1e-6)  # encoded live, never the foreign values


def test_cache_required_fails_naming_the_missing_sample(
    tiny_qwen: Path,
    trajectories: Path,
    tiny_checkpoint: Path,
    tmp_path: Path,
) -> None:
    _build(trajectories, tiny_checkpoint, tmp_path / "c", "--image-width", WIDTH, "--max-samples", "1")
    r = _train(tiny_qwen, trajectories, tiny_checkpoint, tmp_path / "run", "--cache-dir", tmp_path / "c",
               "--cache-required")  # fmt: skip
    assert r.exit_code == 1  # an InputError (CacheMissError)
    assert "Error: no cached VGGT features for sample ep" in r.stderr and "Hint:" in r.stderr
