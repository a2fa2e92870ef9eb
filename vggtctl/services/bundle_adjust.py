"""Bundle adjustment of a COLMAP model with COLMAP's own adjuster (pycolmap): ``infer --bundle-adjust``,
``vggtctl colmap refine``.

The model's points and their 2-D observations (tracks) are the measurements; camera poses, focal lengths
(optionally) and points are refined by Ceres through ``pycolmap.create_default_bundle_adjuster``. The gauge
(where the world is, and its scale) is fixed the COLMAP way, ``TWO_CAMS_FROM_WORLD``: the first image's
pose and the distance to the second stay as they are, so a refined model stays in the prediction's frame.

Safety: a model is refined only when every image keeps at least ``min_observations`` observations, and the
refined model is written only when the solver reports a usable solution and the mean reprojection error
went down. Otherwise the report says why and the model on disk stays exactly as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vggtctl.errors import InputError, UsageError
from vggtctl.io.colmap import model_format
from vggtctl.utils.atomic import atomic_write_json

MIN_OBSERVATIONS = 16
LOSSES = ("trivial", "soft_l1", "cauchy", "huber")
MODEL_FILES = ("cameras", "images", "points3D", "rigs", "frames")


@dataclass
class BundleAdjustConfig:
    """Settings of one bundle adjustment."""

    min_observations: int = MIN_OBSERVATIONS
    refine_focal_length: bool = True
    refine_points: bool = True
    max_iterations: int = 100
    loss: str = "trivial"
    loss_scale: float = 1.0

    def validate(self) -> None:
        """Raise a UsageError for a setting that cannot work."""
        if self.min_observations < 1:
            raise UsageError(
                f"minimum observations per image {self.min_observations} must be >= 1", "e.g. 16"
            )
        if self.max_iterations < 1:
            raise UsageError(f"bundle adjustment iterations {self.max_iterations} must be >= 1", "e.g. 100")
        if self.loss not in LOSSES:
            raise UsageError(f"unknown loss {self.loss!r}", f"use one of {', '.join(LOSSES)}")
        if not self.loss_scale > 0:
            raise UsageError(f"loss scale {self.loss_scale} must be > 0", "e.g. 1 (pixels)")


@dataclass
class RefineReport:
    """What a bundle adjustment did; ``refined`` says whether the model on disk changed."""

    refined: bool
    reason: str
    images: int
    points: int
    observations: int
    min_observations_per_image: int
    error_before_px: float | None
    error_after_px: float | None = None
    median_error_before_px: float | None = None
    median_error_after_px: float | None = None
    termination: str | None = None
    single_observation_points: int = 0
    time_s: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return asdict(self)


def import_pycolmap() -> Any:
    """pycolmap, or a UsageError saying how to install it (it is the ``colmap`` extra)."""
    try:
        import pycolmap
    except ImportError:
        raise UsageError(
            "bundle adjustment needs pycolmap (COLMAP's Python bindings), which is not installed",
            "pip install 'vggtctl[colmap]' (or pip install 'pycolmap>=4.0')",
        ) from None
    return pycolmap


def reprojection_errors(rec: Any) -> np.ndarray:
    """Per-observation reprojection error (pixels) of a ``pycolmap.Reconstruction``.

    An observation whose point lies behind its camera counts as infinitely wrong.
    """
    errors = []
    points = rec.points3D
    for image in rec.images.values():
        if not image.has_pose:
            continue
        obs = [(p2d.xy, points[p2d.point3D_id].xyz) for p2d in image.points2D if p2d.has_point3D()]
        if not obs:
            continue
        xy = np.array([o[0] for o in obs], dtype=np.float64)
        xyz = np.array([o[1] for o in obs], dtype=np.float64)
        E = image.cam_from_world().matrix()
        cam = xyz @ E[:, :3].T + E[:, 3]
        proj = image.camera.img_from_cam(cam, check_cheirality=False)
        err = np.linalg.norm(proj - xy, axis=1)
        err[cam[:, 2] <= 0] = np.inf
        errors.append(err)
    return np.concatenate(errors) if errors else np.zeros(0)


def _stats(errors: np.ndarray) -> tuple[float | None, float | None]:
    if len(errors) == 0:
        return None, None
    return float(np.mean(errors)), float(np.median(errors))


def adjust(rec: Any, config: BundleAdjustConfig) -> tuple[RefineReport, Any]:
    """Bundle-adjust a copy of ``rec``; returns the report and the refined copy (``None`` if not kept)."""
    pycolmap = import_pycolmap()
    config.validate()
    t0 = time.perf_counter()
    # A point seen once constrains nothing: it stays in the model and in the errors reported, but not in
    # the adjustment.
    # Only observations of points seen at least twice count towards the per-image minimum.
    multi = {pid for pid, p in rec.points3D.items() if p.track.length() >= 2}
    single = rec.num_points3D() - len(multi)
    per_image = {
        iid: sum(1 for p2d in im.points2D if p2d.has_point3D() and p2d.point3D_id in multi)
        for iid, im in rec.images.items()
        if im.has_pose
    }
    errors = reprojection_errors(rec)
    before, med_before = _stats(errors)
    report = RefineReport(
        refined=False,
        reason="",
        images=len(per_image),
        points=rec.num_points3D(),
        observations=int(rec.compute_num_observations()),
        min_observations_per_image=min(per_image.values()) if per_image else 0,
        error_before_px=before,
        median_error_before_px=med_before,
        single_observation_points=single,
        settings=asdict(config),
    )
    if len(per_image) < 2:
        report.reason = f"{len(per_image)} posed image(s): bundle adjustment needs at least 2"
        return report, None
    poor = sorted(iid for iid, n in per_image.items() if n < config.min_observations)
    if poor:
        names = ", ".join(f"{rec.images[i].name} ({per_image[i]})" for i in poor[:5])
        more = f" and {len(poor) - 5} more" if len(poor) > 5 else ""
        report.reason = (
            f"too few observations per image (fewer than {config.min_observations}): {names}{more}; "
            "the unrefined model is kept"
        )
        return report, None
    if not np.isfinite(errors).all():
        report.error_before_px = None
        report.reason = "some points lie behind a camera that observes them; the unrefined model is kept"
        return report, None
    work = pycolmap.Reconstruction(rec)
    # Ceres refuses points seen once: they sit out the adjustment and come back, ids unchanged, after.
    singles = [(pid, pycolmap.Point3D(work.points3D[pid].todict())) for pid in set(work.points3D) - multi]
    for pid, _ in singles:
        work.delete_point3D(pid)
    options = pycolmap.BundleAdjustmentOptions()
    options.refine_focal_length = config.refine_focal_length
    options.refine_principal_point = False
    options.refine_extra_params = False
    options.refine_points3D = config.refine_points
    options.print_summary = False
    options.ceres.solver_options.max_num_iterations = config.max_iterations
    options.ceres.loss_function_type = getattr(pycolmap.LossFunctionType, config.loss.upper())
    options.ceres.loss_function_scale = config.loss_scale
    ba_config = pycolmap.BundleAdjustmentConfig()
    for iid in per_image:
        ba_config.add_image(iid)
    ba_config.fix_gauge(pycolmap.BundleAdjustmentGauge.TWO_CAMS_FROM_WORLD)
    summary = pycolmap.create_default_bundle_adjuster(options, ba_config, work).solve()
    for pid, point in singles:
        work.add_point3D_with_id(pid, point)
    report.time_s = round(time.perf_counter() - t0, 4)
    report.termination = str(summary.termination_type).rsplit(".", 1)[-1]
    after_errors = reprojection_errors(work)
    report.error_after_px, report.median_error_after_px = _stats(after_errors)
    if not summary.is_solution_usable():
        report.reason = (
            f"the solver gave no usable solution ({report.termination}); the unrefined model is kept"
        )
        return report, None
    if not np.isfinite(after_errors).all() or not report.error_after_px < before:  # type: ignore[operator]
        report.reason = (
            f"the mean reprojection error would go from {before:.4g} px to {report.error_after_px:.4g} px; "
            "the unrefined model is kept"
        )
        return report, None
    report.refined = True
    report.reason = f"mean reprojection error {before:.4g} px -> {report.error_after_px:.4g} px"
    return report, work


def refine_model(
    folder: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    config: BundleAdjustConfig | None = None,
) -> RefineReport:
    """Bundle-adjust the COLMAP model in ``folder`` and write it to ``out`` (default: in place).

    The refined model is written in the folder's own format (binary or text) by COLMAP's writer; when the
    refinement is not kept, ``out`` receives an unchanged copy (nothing is written in place).

    Raises:
        InputError: No readable COLMAP model in ``folder``, or a model without any 2-D observation.
        UsageError: Bad settings.
    """
    pycolmap = import_pycolmap()
    config = config or BundleAdjustConfig()
    config.validate()
    folder = Path(folder)
    fmt = model_format(folder)  # raises InputError when there is no model
    try:
        rec = pycolmap.Reconstruction(str(folder))
    except Exception as e:  # pycolmap raises plain RuntimeError/ValueError for damaged files
        raise InputError(f"COLMAP cannot read the model in {folder}: {e}", "is the model complete?") from None
    if rec.compute_num_observations() == 0:
        raise InputError(
            f"the COLMAP model in {folder} has no 2-D observations (points3D without tracks)",
            "export it with tracks (`vggtctl infer` writes them) or run COLMAP's feature matching first",
        )
    report, refined = adjust(rec, config)
    target = Path(out) if out is not None else folder
    if refined is not None:
        write_reconstruction(refined, target, fmt)
    elif target.resolve() != folder.resolve():
        write_reconstruction(rec, target, fmt)
    return report


def write_reconstruction(rec: Any, folder: Path, fmt: str) -> None:
    """Write ``rec`` with COLMAP's writer into ``folder``, replacing its model files one by one.

    The files are written into a temporary sibling first and moved in with ``os.replace``; the other
    format's files of the model are removed so the folder never holds two models.
    """
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".refine.", dir=folder))
    try:
        (rec.write_binary if fmt == "bin" else rec.write_text)(str(tmp))
        other = "txt" if fmt == "bin" else "bin"
        for stem in MODEL_FILES:
            src = tmp / f"{stem}.{fmt}"
            if src.exists():
                os.replace(src, folder / src.name)
            (folder / f"{stem}.{other}").unlink(missing_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


REPORT_NAME = "bundle_adjustment.json"


def refine_and_report(
    folder: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    config: BundleAdjustConfig | None = None,
) -> dict[str, Any]:
    """``vggtctl colmap refine``: :func:`refine_model`, plus ``bundle_adjustment.json`` beside the model.

    Returns:
        The report as a dict, with ``model_dir`` (where the model now is) and ``report_file``.
    """
    report = refine_model(folder, out, config).to_dict()
    target = Path(out) if out is not None else Path(folder)
    report["model_dir"] = str(target)
    report["report_file"] = str(target / REPORT_NAME)
    atomic_write_json(target / REPORT_NAME, report)
    return report
