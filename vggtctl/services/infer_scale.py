"""What ``vggtctl infer`` needs to scale: streamed frame decoding, the model's shape before it loads,
the memory plan for a run, and the forward that follows the plan (one pass or aligned chunks).

Kept apart from :mod:`vggtctl.services.infer` (the command's outputs) so the two grow independently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vggtctl.errors import InputError, UsageError, VggtctlError
from vggtctl.progress import NULL_PROGRESS, Progress
from vggtctl.services.infer_plan import InferPlan, MemoryPlanError, parse_memory, plan_inference

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from vggtctl.models.vggt.config import VGGTConfig
    from vggtctl.services.infer import Frame, InferConfig
    from vggtctl.services.infer_chunked import ChunkReport


class DecodedFrames(Sequence["Image.Image"]):
    """The frames' pixels, decoded one at a time as they are iterated (videos streamed in order).

    ``preprocess_images`` iterates it once and keeps only the model-size arrays, so a long video or a
    thousand 24-megapixel photos never sit decoded in memory together.
    """

    def __init__(self, frames: Sequence[Frame]) -> None:
        self.frames = list(frames)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> Image.Image:  # type: ignore[override]
        return next(iter(DecodedFrames([self.frames[i]])))

    def __iter__(self) -> Iterator[Image.Image]:
        from vggtctl.data.preprocess import open_image
        from vggtctl.io.video import iter_video_images

        for video, run in groupby(self.frames, key=lambda f: f.video):
            group = list(run)
            if video is None:
                for f in group:
                    yield f.image if f.image is not None else open_image(f.path)  # type: ignore[arg-type]
            else:
                for _, img in iter_video_images(video, [f.video_index for f in group]):  # type: ignore[misc]
                    yield img


def save_video_frames(frames: Sequence[Frame], folder: Path) -> None:
    """Write the video frames (streamed again) as ``folder/<name>`` PNGs; COLMAP needs the pixels."""
    from vggtctl.utils.atomic import atomic_open

    video = [f for f in frames if f.video is not None]
    for f, img in zip(video, DecodedFrames(video), strict=True):
        with atomic_open(folder / f.name, "wb") as fh:
            img.save(fh, format="PNG")


def model_config_for(model: str, preset: str | None) -> tuple[VGGTConfig, str]:
    """The model's structure without loading its weights: the preset, the tiny recipe or the file's header.

    Hub repos are VGGT-1B shaped unless ``preset`` says otherwise (nothing is downloaded here).
    """
    from vggtctl.models.vggt.config import get_config, preset_name

    if preset:
        return get_config(preset), preset
    if model == "tiny":
        return get_config("tiny"), "tiny"
    path = Path(model).expanduser()
    if path.is_dir():
        found = sorted(path.glob("*.safetensors"))
        path = found[0] if len(found) == 1 else path
    if path.is_file() and path.suffix == ".safetensors":
        from safetensors import safe_open

        from vggtctl.models.vggt.build import infer_config

        try:
            with safe_open(str(path), framework="numpy") as f:
                shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
            config = infer_config(shapes)
            return config, preset_name(config) or "custom"
        except Exception:  # noqa: BLE001 - the loader reports a bad file properly later
            pass
    return get_config("vggt-1b"), "vggt-1b"


def input_hw(frames: Sequence[Frame], mode: str, target: int) -> tuple[int, int]:
    """Model input (H, W) from image headers / video properties, without decoding pixels."""
    from PIL import Image as PILImage

    from vggtctl.data.preprocess import resized_size

    hs, ws = [], []
    seen_video: dict[Path, tuple[int, int]] = {}
    for f in frames:
        if f.video is not None:
            if f.video not in seen_video:
                seen_video[f.video] = _video_size(f.video)
            w, h = seen_video[f.video]
        elif f.image is not None:
            w, h = f.image.size
        else:
            try:
                with PILImage.open(f.path) as im:  # type: ignore[arg-type]
                    w, h = im.size
            except OSError as e:
                raise InputError(
                    f"cannot read image {f.path}: {e}", "is the file a complete image?"
                ) from None
        nw, nh = resized_size(w, h, mode, target)
        if mode == "pad":
            nw = nh = target
        hs.append(min(nh, target) if mode == "crop" else nh)
        ws.append(nw)
    return max(hs), max(ws)


def _video_size(path: Path) -> tuple[int, int]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        cap.release()


def plan_for(
    config: InferConfig,
    model_cfg: VGGTConfig,
    preset: str,
    frames: int,
    hw: tuple[int, int],
    device: str,
    dtype_name: str,
    weights_dtype: str,
    world: int = 1,
    ranks_per_host: int | None = None,
) -> InferPlan:
    """The memory plan for this run's settings (``max_memory``, ``chunk``, ``chunk_size``, ``overlap``).

    ``world`` devices split every pass (per-device numbers); ``ranks_per_host`` CPU ranks share a host.
    """
    return plan_inference(
        model_cfg,
        preset,
        frames,
        hw,
        device=device,
        dtype=dtype_name,
        load_dtype=weights_dtype if not device.startswith("cuda") else "float32",
        max_memory=parse_memory(config.max_memory) if config.max_memory else None,
        chunk=config.chunk,
        chunk_size=config.chunk_size,
        overlap=config.overlap,
        world=world,
        ranks_per_host=ranks_per_host,
    )


def world_layout() -> tuple[int, int]:
    """``(world size, ranks on this host)`` of the running process group, ``(1, 1)`` without one."""
    import os

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 1, 1
    world = dist.get_world_size()
    return world, int(os.environ.get("LOCAL_WORLD_SIZE", world))


def agree_on_plan(make: Callable[[], InferPlan]) -> InferPlan:
    """Every rank runs rank 0's plan (ranks read free memory at slightly different moments).

    Rank 0 plans and broadcasts the plan, or its error, which every rank then raises with the same
    message and exit code (no rank is left waiting in a collective).
    """
    import torch.distributed as dist

    if not distributed():
        return make()
    box: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = ("plan", make().to_dict())
        except VggtctlError as e:
            box[0] = ("error", type(e).__name__, e.message, e.hint, e.exit_code)
    dist.broadcast_object_list(box, src=0)
    if box[0][0] == "error":
        _, name, message, hint, code = box[0]
        err = MemoryPlanError(message, hint) if name == "MemoryPlanError" else UsageError(message, hint)
        err.exit_code = code
        raise err
    d = dict(box[0][1])
    d["image_size_hw"] = tuple(d["image_size_hw"])
    d["chunks"] = [tuple(c) for c in d["chunks"]]
    return InferPlan(**d)


def distributed() -> bool:
    """True inside a process group of several ranks (a launched multi-device run)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def forward(
    model: Any,
    images: np.ndarray,
    plan: InferPlan,
    *,
    device: str,
    dtype: Any,
    progress: Progress = NULL_PROGRESS,
) -> tuple[dict[str, np.ndarray], list[ChunkReport]]:
    """Run what the plan says: one pass, or overlapping chunks aligned into frame 0's world frame."""
    from vggtctl.services.infer import predict
    from vggtctl.services.infer_chunked import predict_chunked

    def one(x: np.ndarray) -> dict[str, np.ndarray]:
        if distributed():
            from vggtctl.services.infer_dist import predict_distributed

            return predict_distributed(model, x, device=device, dtype=dtype)
        return predict(model, x, device=device, dtype=dtype, progress=progress)

    if plan.mode != "chunked":
        return one(images), []

    return predict_chunked(one, images, int(plan.chunk_size or 0), int(plan.overlap or 0), progress=progress)
