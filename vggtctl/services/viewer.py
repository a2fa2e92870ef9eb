"""``vggtctl view``: a :class:`~vggtctl.services.view_scene.Scene` in a viser server, or as one HTML file.

The page shows the coloured points, one frustum per frame textured with its image, and a panel:
point source (depth map + camera / point head / COLMAP / error cloud), confidence threshold (a
percentile or an absolute value, as ``--conf-threshold`` was given), point size, cameras on/off and one
checkbox per frame (its points and its frustum). Points are one viser node per frame, so hiding a frame
or moving the slider sends only what changed.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vggtctl.errors import UsageError
from vggtctl.services.infer import CONF_THRESHOLD_RULE, parse_conf_threshold
from vggtctl.services.serving import LOOPBACK, PortInUseError, check_port_free, url_for
from vggtctl.services.view_scene import PointSet, Scene, load_scene
from vggtctl.utils.atomic import atomic_write_bytes

# Beyond this many frames the per-frame checkboxes would fill the panel; the frames still all show.
MAX_FRAME_TOGGLES = 200
POINT_SOURCE_LABELS = {
    "depth": "depth map + camera",
    "head": "point head",
    "colmap": "COLMAP points",
    "error": "error to ground truth",
}


@dataclass
class ViewConfig:
    """What ``vggtctl view`` was asked for (defaults = the CLI's)."""

    source: str
    host: str = LOOPBACK
    port: int = 8080
    max_points: int = 1_000_000
    conf_threshold: str = "50%"
    points: str = "depth"
    snapshot: Path | None = None

    def validate(self) -> None:
        """Raise a UsageError (exit 2) for a bad value."""
        if self.max_points < 1:
            raise UsageError(f"--max-points {self.max_points}: must be >= 1", "e.g. --max-points 1000000")
        try:
            parse_conf_threshold(self.conf_threshold)
        except UsageError:
            raise UsageError(
                f"--conf-threshold {self.conf_threshold!r}: {CONF_THRESHOLD_RULE}",
                "e.g. 50% (the most confident half) or 3 (absolute confidence)",
            ) from None


def _quiet_stdout() -> contextlib.AbstractContextManager[Any]:
    # viser announces its URL panel and "Server stopped" on stdout, where vggtctl keeps results only;
    # the command prints the URL itself.
    return contextlib.redirect_stdout(io.StringIO())


def _wxyz(R_c2w: np.ndarray) -> np.ndarray:
    import viser.transforms as vtf

    return vtf.SO3.from_matrix(R_c2w).wxyz


def _extent(scene: Scene) -> tuple[np.ndarray, float]:
    """A centre and a size of the scene (robust to outliers), for frustum scale, point size and camera."""
    pts = [p.xyz for p in scene.points.values() if len(p)]
    centres = np.array([f.center() for f in scene.frames]) if scene.frames else np.zeros((0, 3))
    cloud = np.concatenate(pts) if pts else centres
    if len(cloud) == 0:
        return np.zeros(3), 1.0
    lo, hi = np.percentile(cloud, 5, axis=0), np.percentile(cloud, 95, axis=0)
    size = float(np.linalg.norm(hi - lo))
    if len(centres):
        size = max(size, float(np.linalg.norm(centres.max(0) - centres.min(0))))
    return np.median(cloud, axis=0), size if np.isfinite(size) and size > 0 else 1.0


class Viewer:
    """A running viser server showing one scene; :meth:`stop` ends it."""

    def __init__(self, scene: Scene, config: ViewConfig) -> None:
        import viser

        self.scene = scene
        self.config = config
        kind, value = parse_conf_threshold(config.conf_threshold)
        self._percentile = kind == "percentile"
        self._lock = threading.Lock()
        self._centre, self._size = _extent(scene)
        check_port_free(config.host, config.port)
        with _quiet_stdout():
            self.server = viser.ViserServer(
                host=config.host, port=config.port, verbose=False, label="vggtctl"
            )
        self.port = int(self.server.get_port())
        if config.port and self.port != config.port:  # taken between our check and viser's bind
            self.stop()
            raise PortInUseError(
                f"port {config.port} on {config.host} was taken while the viewer started",
                f"pick another port: --port {config.port + 1} (or --port 0 for any free one)",
            )
        self.url = url_for(config.host, self.port)
        self.frame_visible = [True] * len(scene.frames)
        self._point_nodes: dict[int, Any] = {}
        self._frustums: list[Any] = []
        self._build(value)

    # ------------------------------------------------------------ scene

    def _build(self, threshold: float) -> None:
        sv = self.server
        sv.scene.set_up_direction("-y")  # VGGT's world is frame 0's OpenCV camera: y points down
        sources = list(self.scene.points)
        start = self.config.points if self.config.points in sources else (sources[0] if sources else None)
        gui = sv.gui
        gui.add_markdown(
            f"**{Path(self.scene.source).name}** ({self.scene.kind}): {len(self.scene.frames)} frames, "
            f"{self.scene.total_points:,} points"
        )
        self.source = gui.add_dropdown(
            "points", tuple(POINT_SOURCE_LABELS.get(s, s) for s in sources) or ("none",),
            initial_value=POINT_SOURCE_LABELS.get(start, start) if start else "none",
        )  # fmt: skip
        self._label_to_source = {POINT_SOURCE_LABELS.get(s, s): s for s in sources}
        if self._percentile:
            self.conf = gui.add_slider("confidence >= (percentile)", 0.0, 100.0, 1.0, float(threshold))
        else:
            confs = [p.conf for p in self.scene.points.values() if p.conf is not None and len(p.conf)]
            lo = float(min(c.min() for c in confs)) if confs else 0.0
            hi = float(max(c.max() for c in confs)) if confs else 1.0
            lo, hi = min(lo, threshold), max(hi, threshold, lo + 1e-6)
            self.conf = gui.add_slider("confidence >=", lo, hi, (hi - lo) / 200, float(threshold))
        self.point_size = gui.add_slider(
            "point size", self._size * 1e-4, self._size * 0.02, self._size * 1e-4, self._size * 0.002
        )
        self.show_cameras = gui.add_checkbox("cameras", True)
        self.frame_boxes = []
        if self.scene.frames:
            with gui.add_folder("frames", expand_by_default=len(self.scene.frames) <= 24):
                for i, f in enumerate(self.scene.frames[:MAX_FRAME_TOGGLES]):
                    self.frame_boxes.append(gui.add_checkbox(f"{i}: {f.name}"[:40], True))
        for control in (self.source, self.conf, self.point_size):
            control.on_update(lambda _e: self.refresh_points())
        self.show_cameras.on_update(lambda _e: self._refresh_frustums())
        for i, box in enumerate(self.frame_boxes):
            box.on_update(lambda _e, i=i: self.set_frame_visible(i, bool(self.frame_boxes[i].value)))
        self._add_frustums()
        self.refresh_points()
        c0 = self.scene.frames[0] if self.scene.frames else None
        if c0 is not None:
            R = c0.extrinsic[:, :3]
            back = -R.T[:, 2]  # the camera's -z (behind it), in world coordinates
            up = -R.T[:, 1]
            sv.initial_camera.position = c0.center() + (back * 0.3 + up * 0.12) * self._size
            sv.initial_camera.look_at = self._centre
            sv.initial_camera.up = up
        else:
            sv.initial_camera.position = self._centre + np.array([0.0, -0.5, -1.0]) * self._size
            sv.initial_camera.look_at = self._centre

    def _add_frustums(self) -> None:
        scale = 0.06 * self._size
        for i, f in enumerate(self.scene.frames):
            h, w = f.hw
            R = f.extrinsic[:, :3]
            handle = self.server.scene.add_camera_frustum(
                f"/cameras/frame_{i:04d}",
                fov=float(2 * np.arctan2(h / 2, f.K[1, 1])),
                aspect=w / h,
                scale=scale,
                thickness=scale * 0.03,
                color=(230, 90, 40),
                image=f.image,
                format="jpeg",
                jpeg_quality=80,
                wxyz=_wxyz(R.T),
                position=f.center(),
            )
            self._frustums.append(handle)

    def _refresh_frustums(self) -> None:
        show = bool(self.show_cameras.value)
        for i, handle in enumerate(self._frustums):
            handle.visible = show and self.frame_visible[i]

    def current_source(self) -> str | None:
        return self._label_to_source.get(str(self.source.value))

    def threshold_of(self, ps: PointSet) -> float | None:
        """The confidence threshold the slider means for ``ps`` (None: the set has no confidence)."""
        if ps.conf is None or not len(ps.conf):
            return None
        value = float(self.conf.value)
        return float(np.percentile(ps.conf, value)) if self._percentile else value

    def visible_points(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """``{frame index (-1: no frame): (xyz, rgb)}`` of what the panel's settings show now."""
        name = self.current_source()
        if name is None:
            return {}
        ps = self.scene.points[name]
        keep = np.ones(len(ps), dtype=bool)
        thr = self.threshold_of(ps)
        if thr is not None:
            keep &= ps.conf >= thr  # type: ignore[operator]
        if ps.frame is None:
            return {-1: (ps.xyz[keep], ps.rgb[keep])}
        out = {}
        for i in range(len(self.scene.frames)):
            if self.frame_visible[i]:
                m = keep & (ps.frame == i)
                out[i] = (ps.xyz[m], ps.rgb[m])
        return out

    def refresh_points(self) -> None:
        """Redraw the points for the panel's current settings (one node per frame)."""
        with self._lock:
            shown = self.visible_points()
            size = float(self.point_size.value)
            for key in [k for k in self._point_nodes if k not in shown]:
                self._point_nodes.pop(key).remove()
            for i, (xyz, rgb) in shown.items():
                name = "/points/all" if i < 0 else f"/points/frame_{i:04d}"
                self._point_nodes[i] = self.server.scene.add_point_cloud(
                    name, xyz, rgb, point_size=size, point_shape="rounded", precision="float32"
                )

    def set_frame_visible(self, index: int, visible: bool) -> None:
        """Show or hide frame ``index``'s points and frustum."""
        self.frame_visible[index] = visible
        self._refresh_frustums()
        self.refresh_points()

    # ------------------------------------------------------------ lifecycle

    def html(self) -> str:
        """The scene as one self-contained HTML page (viser's client with the scene inlined)."""
        with self._lock:
            return str(self.server.scene.as_html())

    def stop(self) -> None:
        """Stop the server and its threads."""
        with _quiet_stdout():
            self.server.stop()


def open_viewer(config: ViewConfig) -> Viewer:
    """Read ``config.source`` and serve it on ``config.host:config.port`` (``vggtctl view`` without
    ``--snapshot``). The caller owns the returned viewer and must :meth:`Viewer.stop` it.

    Raises:
        UsageError: Bad settings, or a host this machine cannot listen on.
        InputError: The source holds nothing to show.
        PortInUseError: The port is taken.
    """
    config.validate()
    return Viewer(load_scene(config.source, config.max_points), config)


@dataclass
class SnapshotResult:
    path: str
    bytes: int
    frames: int
    points: int


def write_snapshot(config: ViewConfig) -> SnapshotResult:
    """Write ``config.snapshot``: the scene as one HTML file that opens without a server.

    The page is viser's own client with the scene's messages inlined (base64), so it orbits, zooms and
    shows the points and frustums as the live viewer first draws them; the panel's controls need the
    Python server and do nothing there. A temporary server on a free loopback port builds the scene.
    """
    if config.snapshot is None:
        raise UsageError("no snapshot path", "pass --snapshot FILE.html")
    config.validate()
    scene = load_scene(config.source, config.max_points)
    viewer = Viewer(scene, ViewConfig(**{**config.__dict__, "host": LOOPBACK, "port": 0}))
    try:
        data = viewer.html().encode("utf-8")
    finally:
        viewer.stop()
    path = Path(os.fspath(config.snapshot))
    atomic_write_bytes(path, data)
    return SnapshotResult(str(path), len(data), len(scene.frames), scene.total_points)
