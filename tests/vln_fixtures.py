"""Shared pieces of the train-vln tests: a tiny Qwen2.5-VL folder, generated trajectories, small settings."""

from __future__ import annotations

from pathlib import Path

import pytest

# Frames of 64x48 preprocessed to width 112: 84x112 for VGGT (6x8 patches), Qwen's 84x112 (12 LLM tokens).
SMALL = ["image_width=112", "merger_hidden=32", "num_workers=0", "warmup_ratio=0"]


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vggtctl.services.vln.tiny_qwen import write_tiny_qwen

    return write_tiny_qwen(tmp_path_factory.mktemp("vln") / "tiny-qwen").path


@pytest.fixture(scope="session")
def trajectories(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vggtctl.services.vln.synthetic import write_trajectories

    root = tmp_path_factory.mktemp("vln") / "traj"
    write_trajectories(root, episodes=2, steps=4)
    return root
