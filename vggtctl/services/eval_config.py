"""The options of ``vggtctl evaluate``: one dataclass with the documented defaults and its validation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vggtctl.defaults import DEFAULT_REPO
from vggtctl.errors import Problem, raise_problems
from vggtctl.paths import output_dir_problem, output_file_problem
from vggtctl.runtime.precision import DTYPE_CHOICES
from vggtctl.services.metrics.align import DEPTH_ALIGNMENTS
from vggtctl.services.metrics.eth3d_protocol import ETH3D_TOLERANCES, check_tolerances
from vggtctl.utils.devices import device_problem

DEFAULT_MODEL = DEFAULT_REPO
SAMPLES = ("stride", "random")
POINT_SOURCES = ("depth", "head")
PC_ALIGNMENTS = ("points", "cameras", "none")
PC_REFERENCES = ("scan", "depth")
_DOWNLOAD_HINT = "vggtctl download eth3d --scenes {scene} --kinds {kinds}"


@dataclass
class EvalConfig:
    """Everything ``evaluate`` needs; defaults are the documented protocol (docs/evaluate.md).

    Attributes:
        data: ETH3D root holding scene folders (default: the vggtctl dataset cache).
        scenes: Scene names to evaluate (default: every scene under ``data``).
        subset: ``all``/``facades``/``indoor``/``outdoor`` instead of ``scenes``.
        model: Model source for ``load_model`` (Hub id, local file/folder, ``tiny``).
        preset: Model preset, inferred when None.
        revision: Hub revision.
        predictions: A ``vggtctl infer`` output folder (one scene) or a folder of ``<scene>/`` outputs.
        frames: Number of frames per scene (None: all).
        stride: Take every ``stride``-th frame (``sample == "stride"``).
        sample: ``stride`` or ``random`` (seeded per scene).
        seed: Seed of the random frame sampling.
        image_size: Model input width (crop) or longest side (pad); None: the model's training size
            (``config.img_size``: 518 for VGGT-1B, as ``vggtctl infer`` does).
        mode: Preprocessing mode, ``crop`` or ``pad``.
        depth_align: Depth alignments to report.
        points: Predicted points from ``depth`` (depth + cameras) or the point ``head``.
        pc_align: Sim(3) on valid pixel ``points`` or on camera centres (``cameras``).
        icp: Refine the point-cloud alignment with rigid point-to-point ICP.
        icp_threshold: ICP correspondence distance (metres).
        pc_reference: Ground truth: the laser ``scan``s (ETH3D's official protocol), or GT ``depth``
            unprojected (nearest-neighbour distances, the π³/CUT3R protocol).
        tolerances: ETH3D tolerances in metres, increasing (the benchmark's 1-50 cm by default).
        nn_metrics: Against scans, also report the nearest-neighbour figures (``pointcloud_nn``) on the
            scan points visible in the selected frames.
        reconstruction: Score this point-cloud PLY (any method, scan world frame) instead of a model or
            predictions: needs one scene with ``dslr_scan_eval/`` and nothing else.
        eth3d_evaluator: ETH3D's ``ETH3DMultiViewEvaluation`` binary: also run it on the same (aligned)
            cloud and report its numbers beside ours (``reconstruction`` only).
        voxel_size: Finest voxel of the nearest-neighbour search and of the scan averaging (metres; 0:
            exact search on raw points, slow).
        pc_max_points: Nearest-neighbour figures: points scored per side (seeded subset beyond; None: all).
        max_scan_points: Nearest-neighbour figures: seeded subset of the visible scan points (None: all).
        visibility_tolerance: Relative depth agreement for a scan point to count as seen by a view.
        save_vis: Folder for depth/error PNGs and coloured error point clouds.
        out: Where to write the JSON report.
        overwrite: Replace an existing report at ``out`` (otherwise that is a usage error).
        device: ``auto`` (cuda when available), ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: Compute precision: ``auto`` (bf16/fp16 on GPUs; on CPUs bf16 where native, else fp32, see
            :func:`vggtctl.runtime.resolve_dtype`), ``fp32``, ``bf16``, ``fp16``;
            weights stay as loaded and autocast lowers the matmuls, exactly as ``vggtctl infer``.
    """

    data: Path | None = None
    scenes: list[str] | None = None
    subset: str | None = None
    model: str | None = None
    preset: str | None = None
    revision: str | None = None
    predictions: Path | None = None
    frames: int | None = None
    stride: int = 1
    sample: str = "stride"
    seed: int = 0
    image_size: int | None = None
    mode: str = "crop"
    depth_align: tuple[str, ...] = ("median", "scene-median")
    points: str = "depth"
    pc_align: str = "points"
    icp: bool = False
    icp_threshold: float = 0.1
    pc_reference: str = "scan"
    tolerances: tuple[float, ...] = ETH3D_TOLERANCES
    nn_metrics: bool = False
    reconstruction: Path | None = None
    eth3d_evaluator: Path | None = None
    voxel_size: float = 0.01
    pc_max_points: int | None = 100_000
    max_scan_points: int | None = 2_000_000
    visibility_tolerance: float = 0.05
    save_vis: Path | None = None
    out: Path | None = None
    overwrite: bool = False
    device: str = "auto"
    dtype: str = "auto"

    def problems(self) -> list[Problem]:
        """Every bad setting, named by field and value (empty: the config is valid).

        Cheap checks only (values, and whether ``out``/``save_vis`` can be written), so that a bad
        path is reported before the model loads and the scenes are read.
        """
        problems: list[Problem] = []

        def add(field: str | tuple[str, ...], reason: str, *value: Any) -> None:
            problems.append(Problem.of(field, reason, *value))

        def choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
            if value not in allowed:
                add(name, f"use {'/'.join(allowed)}", value)

        if self.model is not None and self.predictions is not None:
            add(("model", "predictions"), "give one, not both")
        if self.scenes and self.subset:
            add(("scenes", "subset"), "give one, not both")
        if self.frames is not None and self.frames < 2:
            add("frames", "camera metrics need at least 2", self.frames)
        if self.stride < 1:
            add("stride", "must be >= 1", self.stride)
        choice("sample", self.sample, SAMPLES)
        if self.sample == "random" and self.frames is None:
            add(("sample", "frames"), "random sampling needs a number of frames")
        if self.sample == "random" and self.stride != 1:
            add(("stride", "sample"), "a stride does not combine with random sampling; give one")
        if self.predictions is not None and (
            self.frames is not None or self.stride != 1 or self.sample != "stride"
        ):
            add(
                ("frames", "stride", "sample"),
                "do not apply to saved predictions (they are evaluated on their own frames)",
            )
        if not self.depth_align:
            add("depth_align", f"give at least one of {'/'.join(DEPTH_ALIGNMENTS)}")
        for a in self.depth_align:
            choice("depth_align", a, DEPTH_ALIGNMENTS)
        choice("points", self.points, POINT_SOURCES)
        choice("pc_align", self.pc_align, PC_ALIGNMENTS)
        choice("pc_reference", self.pc_reference, PC_REFERENCES)
        for reason in check_tolerances(tuple(self.tolerances)):
            add("tolerances", reason, ",".join(f"{t:g}" for t in self.tolerances))
        if self.reconstruction is not None:
            if self.model is not None or self.predictions is not None:
                add(("reconstruction", "model", "predictions"), "give one of them")
            if not self.scenes or len(self.scenes) != 1 or self.subset:
                add(
                    ("reconstruction", "scenes"),
                    "a reconstruction is scored against one scene: --scenes NAME",
                )
            if self.pc_align == "cameras":
                add(("reconstruction", "pc_align"), "a point cloud has no cameras: use none or points")
            if self.pc_reference != "scan":
                add(("reconstruction", "pc_reference"), "a reconstruction is scored against the scans")
        else:
            if self.pc_align == "none":
                add(
                    "pc_align", "none is for --reconstruction clouds already in the scan frame", self.pc_align
                )
            if self.eth3d_evaluator is not None:
                add("eth3d_evaluator", "only runs with --reconstruction")
        if not self.voxel_size >= 0:  # also refuses nan
            add("voxel_size", "must be >= 0", self.voxel_size)
        if not self.icp_threshold > 0:
            add("icp_threshold", "must be > 0", self.icp_threshold)
        if self.pc_max_points is not None and self.pc_max_points < 1000:
            add("pc_max_points", "at least 1000, or all points", self.pc_max_points)
        if self.max_scan_points is not None and self.max_scan_points < 1:
            add("max_scan_points", "must be >= 1, or all points", self.max_scan_points)
        if not 0 < self.visibility_tolerance < 1:
            add("visibility_tolerance", "must be in (0, 1)", self.visibility_tolerance)
        if self.image_size is not None and (self.image_size <= 0 or self.image_size % 14):
            add("image_size", "a positive multiple of 14, e.g. 518", self.image_size)
        choice("mode", self.mode, ("crop", "pad"))
        choice("dtype", self.dtype, DTYPE_CHOICES)
        device_reason = device_problem(self.device)
        if device_reason is not None:
            add("device", device_reason, self.device)
        if self.out is not None:
            problems += filter(None, [output_file_problem("out", Path(self.out), self.overwrite)])
        if self.save_vis is not None:
            problems += filter(None, [output_dir_problem("save_vis", Path(self.save_vis))])
        return problems

    def validate(self) -> None:
        """Check every option and report all problems at once.

        Raises:
            ConfigError: One or more bad values (a UsageError), each named with what is allowed.
        """
        raise_problems(
            "evaluate settings", self.problems(), "see `vggtctl evaluate --help` for the allowed values"
        )
