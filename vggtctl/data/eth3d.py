"""The ETH3D high-res multi-view reader used by evaluate, finetune and infer.

A scene folder is what the per-scene ``<scene>_dslr_<kind>.7z`` archives extract to::

    <scene>/images/dslr_images_undistorted/DSC_XXXX.JPG   dslr_calibration_undistorted/  (PINHOLE)
    <scene>/images/dslr_images/DSC_XXXX.JPG               dslr_calibration_jpg/          (THIN_PRISM_FISHEYE)
    <scene>/ground_truth_depth/dslr_images/DSC_XXXX.JPG   raw little-endian float32, +inf invalid
    <scene>/masks_for_images/dslr_images/DSC_XXXX.png     uint8 0/1/2 (2 = excluded from ground truth)
    <scene>/dslr_scan_eval/scan*.ply + scan_alignment.mlp

Ground-truth depth is published in the *distorted* image. :meth:`Eth3dScene.gt_depth` maps it into the
undistorted (PINHOLE) image with the full THIN_PRISM_FISHEYE model: every undistorted pixel centre is
turned into a ray, projected into the distorted image and sampled there without ever interpolating
across invalid pixels (``vggtctl.data.depth``, which also goes straight to the model grid). The
MeshLab scan alignment is parsed by ``vggtctl.io.meshlab``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from vggtctl.data.depth import undistorted_depth
from vggtctl.data.eth3d_scan import Eth3dScan
from vggtctl.errors import InputError
from vggtctl.io.colmap import Camera, Image, read_cameras_text, read_images_text
from vggtctl.io.meshlab import read_scan_alignment
from vggtctl.io.ply import read_ply

TRAINING_SCENES: tuple[str, ...] = (
    "courtyard", "delivery_area", "electro", "facade", "kicker", "meadow", "office",
    "pipes", "playground", "relief", "relief_2", "terrace", "terrains",
)  # fmt: skip
INDOOR_SCENES: tuple[str, ...] = (
    "delivery_area",
    "kicker",
    "office",
    "pipes",
    "relief",
    "relief_2",
    "terrains",
)
SUBSETS: dict[str, tuple[str, ...]] = {
    "all": TRAINING_SCENES,
    "facades": ("facade", "electro", "courtyard", "terrace"),
    "indoor": INDOOR_SCENES,
    "outdoor": tuple(s for s in TRAINING_SCENES if s not in INDOOR_SCENES),
}

UNDISTORTED_CALIB = "dslr_calibration_undistorted"
DISTORTED_CALIB = "dslr_calibration_jpg"
DEPTH_DIR = "ground_truth_depth"
MASK_DIR = "masks_for_images"
SCAN_DIR = "dslr_scan_eval"
SCAN_ALIGNMENT = "scan_alignment.mlp"

_DOWNLOAD_HINT = "vggtctl download eth3d --scenes {scene}"


@dataclass(frozen=True, eq=False)
class Eth3dFrame:
    """One undistorted DSLR image with its PINHOLE calibration.

    Attributes:
        name: the name as in images.txt, e.g. ``dslr_images_undistorted/DSC_0001.JPG``.
        image_path: the JPEG on disk.
        width: image width in pixels.
        height: image height in pixels.
        K: 3x3 float64 intrinsics, COLMAP pixel-corner convention (pixel centres at +0.5).
        extrinsic: 3x4 float64 world-to-camera ``[R|t]`` in metres (OpenCV axes, as VGGT's extrinsics).
        camera_id: COLMAP camera id (ETH3D starts at 0).
        image_id: COLMAP image id.
    """

    name: str
    image_path: Path
    width: int
    height: int
    K: np.ndarray
    extrinsic: np.ndarray
    camera_id: int = 0
    image_id: int = 0

    @property
    def stem(self) -> str:
        """The file name without folder, e.g. ``DSC_0001.JPG``."""
        return self.name.rsplit("/", 1)[-1]

    @property
    def distorted_name(self) -> str:
        """The matching name in the distorted calibration, e.g. ``dslr_images/DSC_0001.JPG``."""
        return f"dslr_images/{self.stem}"


@dataclass
class _DistortedCalibration:
    cameras: dict[int, Camera]
    by_stem: dict[str, Image]


@dataclass
class Eth3dScene:
    """An ETH3D scene folder. Build with :func:`open_scene`."""

    name: str
    root: Path
    frames: list[Eth3dFrame]
    cameras: dict[int, Camera] = field(repr=False)

    # --- what is present -------------------------------------------------------------------------
    def has_depth(self) -> bool:
        """True when ground-truth depth (``<scene>_dslr_depth``) is present."""
        d = self.root / DEPTH_DIR / "dslr_images"
        return d.is_dir() and any(d.iterdir())

    def has_distorted_calibration(self) -> bool:
        """True when the THIN_PRISM_FISHEYE calibration (``<scene>_dslr_jpg``) is present."""
        return (self.root / DISTORTED_CALIB / "cameras.txt").is_file()

    def has_scans(self) -> bool:
        """True when the evaluation laser scans (``<scene>_dslr_scan_eval``) are present."""
        return has_scans(self.root)

    def frame(self, name: str) -> Eth3dFrame:
        """The frame whose images.txt name or file name (``DSC_0001.JPG``) is ``name``."""
        for f in self.frames:
            if name in (f.name, f.stem):
                return f
        raise InputError(
            f"scene {self.name}: no image named {name!r}",
            f"images look like {self.frames[0].name!r}" if self.frames else "the scene has no images",
        )

    # --- images ------------------------------------------------------------------------------------
    def load_image(self, frame: Eth3dFrame) -> np.ndarray:
        """The undistorted image as ``(height, width, 3)`` uint8 RGB (no EXIF rotation: ETH3D's
        calibration matches the stored pixels)."""
        from PIL import Image as PILImage

        try:
            with PILImage.open(frame.image_path) as im:
                arr = np.asarray(im.convert("RGB"))
        except (OSError, ValueError) as e:
            raise InputError(
                f"cannot read image {frame.image_path}: {e}",
                _DOWNLOAD_HINT.format(scene=self.name) + " --kinds undistorted",
            ) from e
        if arr.shape[:2] != (frame.height, frame.width):
            raise InputError(
                f"{frame.image_path}: image is {arr.shape[1]}x{arr.shape[0]}, calibration says "
                f"{frame.width}x{frame.height}",
                "the scene folder mixes files from different downloads; re-download the scene",
            )
        return arr

    # --- masks and raw depth (distorted frame) ------------------------------------------------------
    @cached_property
    def _distorted(self) -> _DistortedCalibration:
        folder = self.root / DISTORTED_CALIB
        if not (folder / "cameras.txt").is_file():
            raise InputError(
                f"scene {self.name}: no distorted calibration {folder / 'cameras.txt'} (needed to map "
                "ground-truth depth into the undistorted images)",
                _DOWNLOAD_HINT.format(scene=self.name) + " --kinds jpg",
            )
        cams, images = _read_calibration(folder, self.name, "jpg")
        return _DistortedCalibration(cams, {im.name.rsplit("/", 1)[-1]: im for im in images.values()})

    def distorted_camera(self, frame: Eth3dFrame) -> tuple[Camera, np.ndarray]:
        """The THIN_PRISM_FISHEYE camera and 3x4 world-to-camera extrinsic of a frame's original image."""
        calib = self._distorted
        im = calib.by_stem.get(frame.stem)
        path = self.root / DISTORTED_CALIB / "images.txt"
        if im is None:
            raise InputError(
                f"{path}: no entry for {frame.distorted_name}", "re-download the scene's jpg kind"
            )
        if im.camera_id not in calib.cameras:
            raise InputError(
                f"{path}: image {im.name} uses camera {im.camera_id}, not in cameras.txt",
                _DOWNLOAD_HINT.format(scene=self.name) + " --kinds jpg",
            )
        return calib.cameras[im.camera_id], im.extrinsic()

    def depth_path(self, frame: Eth3dFrame) -> Path:
        """Where the frame's raw ground-truth depth file lives (it may be absent)."""
        return self.root / DEPTH_DIR / frame.distorted_name

    def mask_path(self, frame: Eth3dFrame) -> Path:
        """Where the frame's occlusion mask PNG lives (absent means: no masked pixel)."""
        return self.root / MASK_DIR / Path(frame.distorted_name).with_suffix(".png")

    def mask(self, frame: Eth3dFrame) -> np.ndarray:
        """The occlusion mask in the distorted image: uint8 0/1/2, all zeros when no PNG exists."""
        cam, _ = self.distorted_camera(frame)
        path = self.mask_path(frame)
        if not path.is_file():
            return np.zeros((cam.height, cam.width), dtype=np.uint8)
        from PIL import Image as PILImage

        try:
            with PILImage.open(path) as im:
                m = np.asarray(im)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read mask {path}: {e}", "re-download the scene's occlusion kind") from e
        if m.ndim != 2 or m.shape != (cam.height, cam.width):
            raise InputError(
                f"{path}: mask has shape {m.shape}, expected ({cam.height}, {cam.width})",
                _DOWNLOAD_HINT.format(scene=self.name) + " --kinds occlusion",
            )
        bad = ~np.isin(m, (0, 1, 2))
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise InputError(
                f"{path}: mask values must be 0, 1 or 2; pixel (row {i}, col {j}) is {int(m[i, j])}",
                _DOWNLOAD_HINT.format(scene=self.name) + " --kinds occlusion",
            )
        return m.astype(np.uint8, copy=False)

    def raw_depth(self, frame: Eth3dFrame) -> np.ndarray:
        """Ground-truth z-depth in the *distorted* image, float32, +inf invalid (the file as published)."""
        cam, _ = self.distorted_camera(frame)
        path = self.depth_path(frame)
        if not path.is_file():
            raise InputError(
                f"no ground-truth depth {path}", _DOWNLOAD_HINT.format(scene=self.name) + " --kinds depth"
            )
        need = cam.width * cam.height * 4
        size = path.stat().st_size
        if size != need:
            raise InputError(
                f"{path}: {size} bytes, a {cam.width}x{cam.height} float32 depth map has {need}",
                "the file is truncated or belongs to another calibration; re-download the scene's depth kind",
            )
        return np.fromfile(path, dtype="<f4").reshape(cam.height, cam.width).astype(np.float32, copy=False)

    # --- ground truth in the undistorted frame ------------------------------------------------------
    def gt_depth(self, frame: Eth3dFrame) -> np.ndarray:
        """Ground-truth z-depth (metres) in the UNDISTORTED image, ``(height, width)`` float32, 0 invalid.

        Invalid: no laser point, +inf/NaN/<=0 in the file, mask == 2, or outside the distorted image.
        Within a surface (see :func:`sample_depth`) inverse depth is interpolated barycentrically in
        normalised camera coordinates, which reproduces planes exactly through the lens distortion;
        elsewhere the sample of the distorted pixel that contains the point is used, so depth edges are
        never blended. Computed band by band: beyond the result, memory stays a few tens of MB. For the
        model grid, use :func:`vggtctl.data.sample.frame_depth` (no full-size image, disk-cached).
        """
        cam_d, ext_d = self.distorted_camera(frame)
        return undistorted_depth(
            self.raw_depth(frame),
            self.mask(frame),
            self.cameras[frame.camera_id],
            frame.extrinsic,
            cam_d,
            ext_d,
            what=frame.name,
        )

    # --- laser scans ---------------------------------------------------------------------------------
    def scan_alignment(self) -> list[tuple[Path, np.ndarray]]:
        """``(scan PLY path, 4x4 global_T_mesh)`` for every scan listed in ``scan_alignment.mlp``."""
        return read_scan_alignment(self.root / SCAN_DIR / SCAN_ALIGNMENT)

    def scans(self) -> list[Eth3dScan]:
        """Every evaluation scan in its own frame (scanner at the origin) with its world transform.

        ETH3D's accuracy is decided per scan in that frame (the laser beams start at the origin), so
        the scans are kept apart; :meth:`Eth3dScan.world_points` gives the calibration-frame points.
        """
        return read_scans(self.root, self.name)

    def scan_points(self, max_points: int | None = None, seed: int = 0) -> np.ndarray:
        """All evaluation scan points merged in the calibration frame (alignment applied), ``[N, 3]`` float64.

        Args:
            max_points: keep a uniform random subset of this many points (seeded), or all when None.
            seed: seed for the subset.
        """
        parts = [s.world_points().astype(np.float64) for s in self.scans()]
        pts = np.concatenate(parts, axis=0) if parts else np.zeros((0, 3))
        if max_points is not None and len(pts) > max_points:
            idx = np.sort(np.random.default_rng(seed).choice(len(pts), size=max_points, replace=False))
            pts = pts[idx]
        return pts


def has_scans(scene_dir: str | os.PathLike[str]) -> bool:
    """True when ``scene_dir`` holds the evaluation laser scans (``dslr_scan_eval/scan_alignment.mlp``)."""
    return (Path(scene_dir) / SCAN_DIR / SCAN_ALIGNMENT).is_file()


def read_scans(scene_dir: str | os.PathLike[str], name: str | None = None) -> list[Eth3dScan]:
    """The scans of a scene folder that may hold nothing but ``dslr_scan_eval/``.

    Raises:
        InputError: no ``scan_alignment.mlp``, a scan PLY missing, unreadable or without x, y, z.
    """
    root = Path(scene_dir)
    name = name or root.name
    if not has_scans(root):
        raise InputError(
            f"scene {name}: no {root / SCAN_DIR / SCAN_ALIGNMENT}",
            _DOWNLOAD_HINT.format(scene=name) + " --kinds scan_eval",
        )
    out = []
    for path, T in read_scan_alignment(root / SCAN_DIR / SCAN_ALIGNMENT):
        if not path.is_file():
            raise InputError(
                f"{path}: listed in {SCAN_ALIGNMENT} but missing",
                _DOWNLOAD_HINT.format(scene=name) + " --kinds scan_eval",
            )
        ply = read_ply(path)
        if "xyz" not in ply:
            raise InputError(f"{path}: PLY has no x, y, z vertex properties")
        out.append(Eth3dScan(np.asarray(ply["xyz"], dtype=np.float32), T, path.name))
    return out


def _read_calibration(folder: Path, scene: str, kind: str) -> tuple[dict[int, Camera], dict[int, Image]]:
    """cameras.txt and images.txt of a calibration folder; a malformed line names file:line and the kind
    to re-download."""
    try:
        return read_cameras_text(folder / "cameras.txt"), read_images_text(folder / "images.txt")
    except InputError as e:
        raise InputError(
            e.message,
            f"the calibration is damaged; re-download it: {_DOWNLOAD_HINT.format(scene=scene)} --kinds {kind}",
        ) from None


def list_scenes(root: str | os.PathLike[str]) -> list[str]:
    """Names of the scene folders under ``root`` that hold an undistorted calibration (sorted)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"ETH3D folder {root} does not exist", "vggtctl download eth3d --subset facades")
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / UNDISTORTED_CALIB / "images.txt").is_file()
    )


def open_scene(scene_dir: str | os.PathLike[str]) -> Eth3dScene:
    """Read a scene's undistorted calibration; frames are sorted by name.

    Raises:
        InputError: the folder is not a scene, or a calibration file is malformed (file:line).
    """
    root = Path(scene_dir)
    calib = root / UNDISTORTED_CALIB
    if not (calib / "cameras.txt").is_file() or not (calib / "images.txt").is_file():
        raise InputError(
            f"{root} is not an ETH3D scene folder (no {UNDISTORTED_CALIB}/cameras.txt and images.txt)",
            _DOWNLOAD_HINT.format(scene=root.name) + f" --out {root.parent}",
        )
    cameras, images = _read_calibration(calib, root.name, "undistorted")
    frames = []
    for im in images.values():
        cam = cameras.get(im.camera_id)
        if cam is None:
            raise InputError(
                f"{calib / 'images.txt'}: image {im.name} uses camera {im.camera_id}, "
                f"cameras.txt has {sorted(cameras)}",
                _DOWNLOAD_HINT.format(scene=root.name) + " --kinds undistorted",
            )
        if cam.model not in ("PINHOLE", "SIMPLE_PINHOLE"):
            raise InputError(
                f"{calib / 'cameras.txt'}: camera {cam.id} is {cam.model}, undistorted images need PINHOLE",
                f"{UNDISTORTED_CALIB} holds the PINHOLE calibration of ETH3D's undistorted kind: "
                + _DOWNLOAD_HINT.format(scene=root.name)
                + " --kinds undistorted",
            )
        frames.append(
            Eth3dFrame(
                name=im.name,
                image_path=root / "images" / im.name,
                width=cam.width,
                height=cam.height,
                K=cam.K(),
                extrinsic=im.extrinsic(),
                camera_id=cam.id,
                image_id=im.id,
            )
        )
    frames.sort(key=lambda f: f.name)
    return Eth3dScene(name=root.name, root=root, frames=frames, cameras=cameras)
