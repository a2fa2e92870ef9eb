"""The ``colmap/`` folder of ``vggtctl infer``: the export with depth-agreement tracks, or a bundle-adjusted one.

Without ``--bundle-adjust``: the confidence-selected points with their observations (their source pixel
and the frames where depth agrees, :mod:`vggtctl.services.colmap_tracks`). With it: the track head's
points and observations (:mod:`vggtctl.services.track_observations`) refined by COLMAP's bundle adjuster
(:mod:`vggtctl.services.bundle_adjust`); when the refinement is not kept (too few observations, error not
lower, no track head) the folder holds the plain export instead and the report says why.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vggtctl.io.colmap_export import write_prediction_model
from vggtctl.io.image_geometry import ImageGeometry, intrinsics_to_original
from vggtctl.services.bundle_adjust import BundleAdjustConfig, RefineReport, refine_model
from vggtctl.services.colmap_tracks import Observations, depth_agreement_observations
from vggtctl.services.track_observations import TrackedPoints


def colmap_cameras(
    preds: dict[str, np.ndarray], geoms: Sequence[ImageGeometry], units: str = "original"
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Intrinsics ``[S,3,3]`` and image sizes ``(h, w)`` for the COLMAP export, in ``units`` pixels."""
    Ks, sizes = [], []
    for i, geom in enumerate(geoms):
        K = preds["intrinsic"][i].astype(np.float64)
        if units == "original":
            Ks.append(intrinsics_to_original(K, geom))
            sizes.append(tuple(int(v) for v in geom.orig_hw))
        else:
            Ks.append(K)
            sizes.append(tuple(int(v) for v in geom.out_hw))
    return np.stack(Ks), sizes  # type: ignore[return-value]


def export_observations(
    preds: dict[str, np.ndarray],
    geoms: Sequence[ImageGeometry],
    xyz: np.ndarray,
    pixel_index: np.ndarray,
    conf_threshold: float,
    units: str,
) -> Observations:
    """Depth-agreement observations of the exported points, in the export's pixel units."""
    obs = depth_agreement_observations(
        xyz,
        pixel_index,
        preds["depth"],
        preds["depth_conf"],
        preds["extrinsic"],
        preds["intrinsic"],
        geoms,
        conf_threshold=conf_threshold,
    )
    return obs.to_original(geoms) if units == "original" else obs


def write_export(
    folder: Path,
    preds: dict[str, np.ndarray],
    geoms: Sequence[ImageGeometry],
    names: Sequence[str],
    xyz: np.ndarray,
    rgb: np.ndarray,
    observations: Observations | None,
    *,
    units: str,
    fmt: str,
) -> None:
    """Write the model: one PINHOLE camera per frame, the points, their observations."""
    Ks, sizes = colmap_cameras(preds, geoms, units)
    obs = None if observations is None else (observations.point, observations.frame, observations.xy)
    write_prediction_model(folder, preds["extrinsic"], Ks, sizes, names, xyz, rgb, fmt, obs)


def write_bundle_adjusted(
    folder: Path,
    preds: dict[str, np.ndarray],
    geoms: Sequence[ImageGeometry],
    names: Sequence[str],
    tracked: TrackedPoints,
    *,
    units: str,
    fmt: str,
    config: BundleAdjustConfig,
) -> RefineReport:
    """Write the track-head model into a scratch folder, bundle-adjust it into ``folder`` if it improves.

    Returns the report; when it says ``refined=False`` nothing was written to ``folder``.
    """
    scratch = folder.parent / f".{folder.name}.unrefined"
    try:
        obs = tracked.observations.to_original(geoms) if units == "original" else tracked.observations
        write_export(scratch, preds, geoms, names, tracked.xyz, tracked.rgb, obs, units=units, fmt=fmt)
        if len(obs) == 0:
            return RefineReport(
                False, "the track head kept no observation", len(names), len(tracked.xyz), 0, 0, None
            )
        report = refine_model(scratch, folder, config) if len(tracked.xyz) else None
        if report is None:
            return RefineReport(False, "no query point had a finite depth", len(names), 0, 0, 0, None)
        if not report.refined:
            # refine_model copied the unrefined sparse model to ``folder``: the caller writes the plain
            # export there instead.
            shutil.rmtree(folder, ignore_errors=True)
        return report
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
