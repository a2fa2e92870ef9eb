"""The data layer end to end: one SceneSample, then seeded frame sets through a DataLoader with workers.

    python examples/data_layer.py [ETH3D_ROOT]      # default: two synthetic scenes in ./demo_data

Runs on CPU in seconds on the synthetic scenes (written on first use, as `vggtctl download eth3d
--synthetic` does). Ground-truth depth is cached under $VGGTCTL_HOME/cache/gt_depth.
"""

from __future__ import annotations

import sys
from pathlib import Path

from torch.utils.data import DataLoader

from vggtctl.data import SceneDataset, collate_samples, load_sample
from vggtctl.data.eth3d import list_scenes
from vggtctl.services.synthetic import generate_scenes


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("demo_data")
    if not root.is_dir() or not list_scenes(root):
        generate_scenes(root, scenes=2, views=6, seed=0)
    scenes = [root / name for name in list_scenes(root)]

    # One sample: frames 2, 0 and 4 of the first scene (the first one listed is the reference).
    sample = load_sample(scenes[0], [2, 0, 4], image_size=224)
    print(sample.scene, sample.frames)
    print("images", sample.images.shape, "depth", sample.depth.shape, f"valid {sample.valid.mean():.2f}")
    print("model-grid K of the reference:\n", sample.intrinsics[0].round(1))

    # Seeded frame sets for training: 3 frames per item, 2 items per scene, 2 worker processes.
    dataset = SceneDataset(scenes, frames_per_sample=3, samples_per_scene=2, seed=0, image_size=224)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate_samples)
    for epoch in range(2):
        dataset.set_epoch(epoch)  # new draws per epoch, the same in every run
        for batch in loader:
            print(epoch, batch["scene"], [f[0].rsplit("/", 1)[-1] for f in batch["frames"]],
                  tuple(batch["images"].shape), tuple(batch["depth"].shape))  # fmt: skip


if __name__ == "__main__":
    main()
