"""COLMAP text models (cameras.txt, images.txt, points3D.txt): read with file:line errors, write.

Conventions (COLMAP docs): images.txt has two lines per image (the second may be empty), pose is
world-to-camera with a Hamilton quaternion QW QX QY QZ, camera ids are arbitrary integers (ETH3D
starts at 0), pixel (0,0) is the top-left corner of the top-left pixel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vggtctl.errors import InputError
from vggtctl.utils.atomic import atomic_write_text

# model name -> number of parameters (COLMAP ids 0..10)
CAMERA_MODELS: dict[str, int] = {
    "SIMPLE_PINHOLE": 3, "PINHOLE": 4, "SIMPLE_RADIAL": 4, "RADIAL": 5, "OPENCV": 8,
    "OPENCV_FISHEYE": 8, "FULL_OPENCV": 12, "FOV": 5, "SIMPLE_RADIAL_FISHEYE": 4,
    "RADIAL_FISHEYE": 5, "THIN_PRISM_FISHEYE": 12,
}  # fmt: skip


@dataclass
class Camera:
    id: int
    model: str
    width: int
    height: int
    params: np.ndarray  # float64

    def K(self) -> np.ndarray:
        """3x3 intrinsics in COLMAP pixel units (fx, fy, cx, cy of the model's first params)."""
        p = self.params
        if self.model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL", "SIMPLE_RADIAL_FISHEYE", "RADIAL_FISHEYE", "FOV"):
            f, cx, cy = p[0], p[1], p[2]
            fx = fy = f
        else:
            fx, fy, cx, cy = p[0], p[1], p[2], p[3]
        return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)


@dataclass
class Image:
    id: int
    qvec: np.ndarray  # (4,) w, x, y, z — world-to-camera rotation
    tvec: np.ndarray  # (3,)
    camera_id: int
    name: str
    xys: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    point3D_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))

    def rotation(self) -> np.ndarray:
        return qvec_to_rotmat(self.qvec)

    def extrinsic(self) -> np.ndarray:
        """3x4 world-to-camera [R|t] (OpenCV axes), the same convention as VGGT's extrinsics."""
        return np.concatenate([self.rotation(), self.tvec.reshape(3, 1)], axis=1)

    def center(self) -> np.ndarray:
        return -self.rotation().T @ self.tvec


@dataclass
class Point3D:
    id: int
    xyz: np.ndarray
    rgb: np.ndarray
    error: float
    image_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))
    point2D_idxs: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))


def qvec_to_rotmat(q: np.ndarray) -> np.ndarray:
    """Rotation matrix of a (not necessarily unit) quaternion w, x, y, z."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def rotmat_to_qvec(R: np.ndarray) -> np.ndarray:
    """Unit quaternion w, x, y, z (w >= 0) of a rotation matrix (Shepperd's method, stable)."""
    R = np.asarray(R, dtype=np.float64)
    t = np.trace(R)
    if t > 0:
        s = np.sqrt(t + 1.0) * 2
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2]) * 2
        q = [(R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif R[1, 1] > R[2, 2]:
        s = np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2]) * 2
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s]
    else:
        s = np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1]) * 2
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s]
    q = np.array(q)
    q /= np.linalg.norm(q)
    return -q if q[0] < 0 else q


def _data_lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}", "check the scene folder is complete") from e
    return [(i, line.rstrip("\r")) for i, line in enumerate(text.split("\n"), start=1)]


def _num(path: Path, lineno: int, tok: str, kind: type = float) -> float:
    try:
        return kind(tok)
    except ValueError:
        raise InputError(f"{path}:{lineno}: expected a number, got {tok!r}") from None


def read_cameras_text(path: str | os.PathLike[str]) -> dict[int, Camera]:
    path = Path(path)
    cams: dict[int, Camera] = {}
    for lineno, line in _data_lines(path):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.split()
        if len(parts) < 4:
            raise InputError(f"{path}:{lineno}: expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS...', got {s!r}")
        model = parts[1]
        if model not in CAMERA_MODELS:
            raise InputError(f"{path}:{lineno}: unknown camera model {model!r}", f"known: {', '.join(CAMERA_MODELS)}")
        n = CAMERA_MODELS[model]
        if len(parts) != 4 + n:
            raise InputError(f"{path}:{lineno}: {model} needs {n} parameters, got {len(parts) - 4}")
        cid = int(_num(path, lineno, parts[0], int))
        params = np.array([_num(path, lineno, t) for t in parts[4:]], dtype=np.float64)
        cams[cid] = Camera(cid, model, int(_num(path, lineno, parts[2], int)), int(_num(path, lineno, parts[3], int)), params)
    return cams


def read_images_text(path: str | os.PathLike[str]) -> dict[int, Image]:
    """Read images.txt pairwise: a pose line, then a (possibly empty) 2-D points line."""
    path = Path(path)
    lines = [(n, s) for n, s in _data_lines(path) if not s.lstrip().startswith("#")]
    # Drop trailing blank lines only; inner blank lines are meaningful (empty POINTS2D lines).
    while lines and not lines[-1][1].strip():
        lines.pop()
    images: dict[int, Image] = {}
    i = 0
    while i < len(lines):
        lineno, s = lines[i]
        parts = s.split()
        if len(parts) < 10:
            raise InputError(
                f"{path}:{lineno}: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME', got {s.strip()!r}"
            )
        iid = int(_num(path, lineno, parts[0], int))
        q = np.array([_num(path, lineno, t) for t in parts[1:5]])
        t = np.array([_num(path, lineno, t) for t in parts[5:8]])
        cam = int(_num(path, lineno, parts[8], int))
        name = " ".join(parts[9:])
        xys = np.zeros((0, 2))
        ids = np.zeros((0,), dtype=np.int64)
        if i + 1 < len(lines):
            l2no, s2 = lines[i + 1]
            toks = s2.split()
            if len(toks) % 3:
                raise InputError(f"{path}:{l2no}: POINTS2D line must hold triples 'X Y POINT3D_ID'")
            if toks:
                arr = np.array([_num(path, l2no, tk) for tk in toks]).reshape(-1, 3)
                xys, ids = arr[:, :2], arr[:, 2].astype(np.int64)
        images[iid] = Image(iid, q, t, cam, name, xys, ids)
        i += 2
    return images


def read_points3D_text(path: str | os.PathLike[str]) -> dict[int, Point3D]:
    path = Path(path)
    pts: dict[int, Point3D] = {}
    for lineno, line in _data_lines(path):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.split()
        if len(parts) < 8 or (len(parts) - 8) % 2:
            raise InputError(f"{path}:{lineno}: expected 'POINT3D_ID X Y Z R G B ERROR TRACK[]', got {s[:80]!r}")
        vals = [_num(path, lineno, t) for t in parts]
        track = np.array(vals[8:], dtype=np.int64).reshape(-1, 2)
        pid = int(vals[0])
        pts[pid] = Point3D(pid, np.array(vals[1:4]), np.array(vals[4:7], dtype=np.uint8), vals[7], track[:, 0], track[:, 1])
    return pts


def read_model_text(folder: str | os.PathLike[str]) -> tuple[dict[int, Camera], dict[int, Image], dict[int, Point3D]]:
    folder = Path(folder)
    pts_path = folder / "points3D.txt"
    points = read_points3D_text(pts_path) if pts_path.exists() else {}
    return read_cameras_text(folder / "cameras.txt"), read_images_text(folder / "images.txt"), points


def write_model_text(
    folder: str | os.PathLike[str],
    cameras: dict[int, Camera],
    images: dict[int, Image],
    points: dict[int, Point3D] | None = None,
) -> None:
    """Write cameras.txt, images.txt and points3D.txt (each atomically)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cam_lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
                 f"# Number of cameras: {len(cameras)}"]  # fmt: skip
    for c in cameras.values():
        cam_lines.append(" ".join([str(c.id), c.model, str(c.width), str(c.height), *(f"{v:.10g}" for v in c.params)]))
    atomic_write_text(folder / "cameras.txt", "\n".join(cam_lines) + "\n")
    img_lines = ["# Image list with two lines of data per image:",
                 "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
                 "#   POINTS2D[] as (X, Y, POINT3D_ID)", f"# Number of images: {len(images)}"]  # fmt: skip
    for im in images.values():
        img_lines.append(" ".join([str(im.id), *(f"{v:.12g}" for v in im.qvec), *(f"{v:.12g}" for v in im.tvec),
                                   str(im.camera_id), im.name]))  # fmt: skip
        img_lines.append(" ".join(f"{x:.6g} {y:.6g} {int(p)}" for (x, y), p in zip(im.xys, im.point3D_ids, strict=True)))
    atomic_write_text(folder / "images.txt", "\n".join(img_lines) + "\n")
    pts = points or {}
    pt_lines = ["# 3D point list with one line of data per point:",
                "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
                f"# Number of points: {len(pts)}"]  # fmt: skip
    for p in pts.values():
        track = " ".join(f"{int(a)} {int(b)}" for a, b in zip(p.image_ids, p.point2D_idxs, strict=True))
        pt_lines.append(" ".join([str(p.id), *(f"{v:.9g}" for v in p.xyz), *(str(int(v)) for v in p.rgb),
                                  f"{p.error:.6g}", track]).rstrip())  # fmt: skip
    atomic_write_text(folder / "points3D.txt", "\n".join(pt_lines) + "\n")
