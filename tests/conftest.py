"""Shared fixtures. Self-contained: nothing here reads the reference folder outside the repo."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.netguard import closed_port, no_proxy_env, offline_dns  # noqa: F401 - fixtures for every test

DATA = Path(__file__).parent / "data"

# Stable help/table output regardless of the terminal running the tests.
os.environ.setdefault("COLUMNS", "120")
os.environ.setdefault("TERMINAL_WIDTH", "120")
os.environ["NO_COLOR"] = "1"
os.environ.pop("VGGTCTL_DEBUG", None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    from tests.browser import browser_missing

    missing = browser_missing()
    skip_browser = pytest.mark.skip(reason=f"browser test skipped: {missing}") if missing else None
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
        if "browser" in item.keywords and skip_browser is not None:
            item.add_marker(skip_browser)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's caches: VGGTCTL_HOME and HF_HOME point into a temp dir."""
    home = tmp_path_factory.getbasetemp() / "home"
    monkeypatch.setenv("VGGTCTL_HOME", str(home / "vggtctl"))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture(scope="session")
def _torch_extensions_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("TORCH_EXTENSIONS_DIR")
    return Path(given) if given else tmp_path_factory.mktemp("torch_extensions")


@pytest.fixture
def torch_extensions_dir(_torch_extensions_session: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One build folder for DeepSpeed's JIT ops per test session (``TORCH_EXTENSIONS_DIR``, kept if set).

    Every CPU ``init_distributed`` builds ``deepspeed_shm_comm`` (30-40 s, minutes under load) unless the
    folder already holds it: the ZeRO tests of train-vln and finetune share this one, so it compiles once
    per suite and never into the user's ``~/.cache``. Set ``TORCH_EXTENSIONS_DIR`` to reuse a build.
    """
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(_torch_extensions_session))
    return _torch_extensions_session


@pytest.fixture(scope="session")
def tiny_reference() -> dict[str, np.ndarray]:
    """Every input, output and intermediate of the reference forward pass of the seeded tiny model."""
    with np.load(DATA / "tiny_reference.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seeded tiny VGGT checkpoint, regenerated from its recipe (never committed)."""
    from vggtctl.models.vggt.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model.safetensors")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small synthetic ETH3D-layout scenes with exact ground truth (read-only: copy before mutating)."""
    from vggtctl.services.synthetic import generate_scenes

    out = tmp_path_factory.mktemp("synthetic")
    generate_scenes(out, scenes=2, views=6, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path, synthetic_root: Path) -> Path:
    """A whole ``vggtctl infer`` output folder of the tiny model on a synthetic scene (read-only)."""
    from vggtctl.services.infer import InferConfig, run_inference

    out = tmp_path_factory.mktemp("tiny_run") / "run"
    images = synthetic_root / "synth_000" / "images" / "dslr_images_undistorted"
    run_inference(InferConfig([str(images)], out=out, model=str(tiny_checkpoint), device="cpu", dtype="fp32"))
    return out
