"""COLMAP models, text (``*.txt``) and binary (``*.bin``): read with file:line (or file:offset) errors, write.

Conventions (COLMAP docs): images.txt has two lines per image (the second may be empty), pose is
world-to-camera with a Hamilton quaternion QW QX QY QZ, camera ids are arbitrary integers (ETH3D
starts at 0), pixel (0,0) is the top-left corner of the top-left pixel.

The binary layout is COLMAP's own (``src/colmap/scene/reconstruction_io.cc``, ``read_write_model.py``),
little-endian and unpadded: ``cameras.bin`` = u64 count, then per camera i32 id, i32 model id, u64 width,
u64 height, f64 params; ``images.bin`` = u64 count, then per image i32 id, 4 f64 qvec, 3 f64 tvec, i32
camera id, the NUL-terminated name, u64 point count and per point f64 x, f64 y, i64 point3D id;
``points3D.bin`` = u64 count, then per point u64 id, 3 f64 xyz, 3 u8 rgb, f64 error, u64 track length and
per track element i32 image id, i32 point2D index. COLMAP >= 3.12 also writes ``rigs.bin`` and
``frames.bin``; without them it assumes one camera per rig and one image per frame, which is what a
VGGT export is.

COLMAP's text reader splits ``images.txt`` lines at spaces, so a name with whitespace cannot be written
as text (pycolmap 4.2 reads ``my image.png`` back as ``my``): the text writer refuses it, the binary
format stores it unchanged.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from vggtctl.errors import InputError, UsageError
from vggtctl.utils.atomic import atomic_open, atomic_write_text

FORMATS = ("bin", "txt")

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
        if self.model in (
            "SIMPLE_PINHOLE",
            "SIMPLE_RADIAL",
            "RADIAL",
            "SIMPLE_RADIAL_FISHEYE",
            "RADIAL_FISHEYE",
            "FOV",
        ):
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
class PointCloud:
    """Points held as arrays, ids ``first_id .. first_id + N - 1``, with optional tracks.

    Half a million :class:`Point3D` objects would cost more than writing them, so the writers take the
    arrays as they are. Tracks are stored flat (CSR): point ``j``'s track elements are
    ``track_image_ids[track_offsets[j]:track_offsets[j + 1]]`` with the matching ``track_point2D_idxs``
    (indices into that image's ``xys``). Without tracks every point has an empty track.
    """

    xyz: np.ndarray  # (N, 3), written as float64
    rgb: np.ndarray  # (N, 3) uint8
    error: np.ndarray | None = None  # (N,), 0 when None
    first_id: int = 1
    track_offsets: np.ndarray | None = None  # (N + 1,) int64
    track_image_ids: np.ndarray | None = None  # (M,) int32
    track_point2D_idxs: np.ndarray | None = None  # (M,) int32

    def __len__(self) -> int:
        return len(self.xyz)

    def track_lengths(self) -> np.ndarray:
        """Number of observations of each point (zeros without tracks)."""
        if self.track_offsets is None:
            return np.zeros(len(self), dtype=np.int64)
        return np.diff(np.asarray(self.track_offsets, dtype=np.int64))


Points = Mapping[int, "Point3D"] | PointCloud


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


# Every malformed-file error names file:line (or byte) and says what to do about it.
_BAD_MODEL_HINT = (
    "the file is damaged or not in COLMAP's format; re-export the model, or re-download it "
    "if it came with a dataset (ETH3D: vggtctl download eth3d --scenes <scene>)"
)


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
        raise InputError(f"{path}:{lineno}: expected a number, got {tok!r}", _BAD_MODEL_HINT) from None


def read_cameras_text(path: str | os.PathLike[str]) -> dict[int, Camera]:
    path = Path(path)
    cams: dict[int, Camera] = {}
    for lineno, line in _data_lines(path):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.split()
        if len(parts) < 4:
            raise InputError(
                f"{path}:{lineno}: expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS...', got {s!r}",
                _BAD_MODEL_HINT,
            )
        model = parts[1]
        if model not in CAMERA_MODELS:
            raise InputError(
                f"{path}:{lineno}: unknown camera model {model!r}",
                f"known: {', '.join(CAMERA_MODELS)}; {_BAD_MODEL_HINT}",
            )
        n = CAMERA_MODELS[model]
        if len(parts) != 4 + n:
            raise InputError(
                f"{path}:{lineno}: {model} needs {n} parameters, got {len(parts) - 4}", _BAD_MODEL_HINT
            )
        cid = int(_num(path, lineno, parts[0], int))
        params = np.array([_num(path, lineno, t) for t in parts[4:]], dtype=np.float64)
        cams[cid] = Camera(
            cid, model, int(_num(path, lineno, parts[2], int)), int(_num(path, lineno, parts[3], int)), params
        )
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
                f"{path}:{lineno}: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME', got {s.strip()!r}",
                _BAD_MODEL_HINT,
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
                raise InputError(
                    f"{path}:{l2no}: POINTS2D line must hold triples 'X Y POINT3D_ID'", _BAD_MODEL_HINT
                )
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
            raise InputError(
                f"{path}:{lineno}: expected 'POINT3D_ID X Y Z R G B ERROR TRACK[]', got {s[:80]!r}",
                _BAD_MODEL_HINT,
            )
        vals = [_num(path, lineno, t) for t in parts]
        track = np.array(vals[8:], dtype=np.int64).reshape(-1, 2)
        pid = int(vals[0])
        pts[pid] = Point3D(
            pid, np.array(vals[1:4]), np.array(vals[4:7], dtype=np.uint8), vals[7], track[:, 0], track[:, 1]
        )
    return pts


def read_model_text(
    folder: str | os.PathLike[str],
) -> tuple[dict[int, Camera], dict[int, Image], dict[int, Point3D]]:
    folder = Path(folder)
    pts_path = folder / "points3D.txt"
    points = read_points3D_text(pts_path) if pts_path.exists() else {}
    return read_cameras_text(folder / "cameras.txt"), read_images_text(folder / "images.txt"), points


def check_text_names(images: Mapping[int, Image] | list[str]) -> None:
    """Refuse image names COLMAP's text reader cannot read back unchanged (it splits lines at whitespace).

    Raises:
        InputError: a name is empty or holds whitespace; the hint points to the binary format.
    """
    names = [im.name for im in images.values()] if isinstance(images, Mapping) else list(images)
    bad = [n for n in names if not n or any(ch.isspace() for ch in n)]
    if bad:
        listing = ", ".join(repr(n) for n in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise InputError(
            f"COLMAP's text format cannot hold image names with spaces or other whitespace: {listing} "
            "(its images.txt reader splits at whitespace and would read a different name)",
            "write the binary model (--colmap-format bin, the default), or rename the images",
        )


def write_model_text(
    folder: str | os.PathLike[str],
    cameras: Mapping[int, Camera],
    images: Mapping[int, Image],
    points: Points | None = None,
) -> None:
    """Write cameras.txt, images.txt and points3D.txt (each atomically).

    Raises:
        InputError: an image name holds whitespace (see :func:`check_text_names`).
    """
    check_text_names(images)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cam_lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
                 f"# Number of cameras: {len(cameras)}"]  # fmt: skip
    for c in cameras.values():
        cam_lines.append(
            " ".join([str(c.id), c.model, str(c.width), str(c.height), *(f"{v:.10g}" for v in c.params)])
        )
    atomic_write_text(folder / "cameras.txt", "\n".join(cam_lines) + "\n")
    img_lines = ["# Image list with two lines of data per image:",
                 "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
                 "#   POINTS2D[] as (X, Y, POINT3D_ID)", f"# Number of images: {len(images)}"]  # fmt: skip
    for im in images.values():
        img_lines.append(" ".join([str(im.id), *(f"{v:.12g}" for v in im.qvec), *(f"{v:.12g}" for v in im.tvec),
                                   str(im.camera_id), im.name]))  # fmt: skip
        img_lines.append(
            " ".join(f"{x:.10g} {y:.10g} {int(p)}" for (x, y), p in zip(im.xys, im.point3D_ids, strict=True))
        )
    atomic_write_text(folder / "images.txt", "\n".join(img_lines) + "\n")
    pts = {} if points is None else points
    pt_lines = ["# 3D point list with one line of data per point:",
                "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
                f"# Number of points: {len(pts)}"]  # fmt: skip
    if isinstance(pts, PointCloud):
        pt_lines.extend(_cloud_lines(pts))
    else:
        for p in pts.values():
            track = " ".join(f"{int(a)} {int(b)}" for a, b in zip(p.image_ids, p.point2D_idxs, strict=True))
            pt_lines.append(" ".join([str(p.id), *(f"{v:.9g}" for v in p.xyz), *(str(int(v)) for v in p.rgb),
                                      f"{p.error:.6g}", track]).rstrip())  # fmt: skip
    atomic_write_text(folder / "points3D.txt", "\n".join(pt_lines) + "\n")


def _cloud_lines(cloud: PointCloud) -> list[str]:
    """The same text as the Point3D path, from arrays (plain Python numbers format ~2x faster than numpy's)."""
    xyz = np.asarray(cloud.xyz, dtype=np.float64).tolist()
    rgb = np.asarray(cloud.rgb, dtype=np.uint8).tolist()
    err = [0.0] * len(xyz) if cloud.error is None else np.asarray(cloud.error, dtype=np.float64).tolist()
    lines = [
        f"{cloud.first_id + j} {x:.9g} {y:.9g} {z:.9g} {r} {g} {b} {e:.6g}"
        for j, ((x, y, z), (r, g, b), e) in enumerate(zip(xyz, rgb, err, strict=True))
    ]
    if cloud.track_offsets is not None:
        offsets = np.asarray(cloud.track_offsets, dtype=np.int64).tolist()
        pairs = np.stack([cloud.track_image_ids, cloud.track_point2D_idxs], axis=1).astype(np.int64).tolist()
        for j in range(len(lines)):
            track = pairs[offsets[j] : offsets[j + 1]]
            if track:
                lines[j] += " " + " ".join(f"{a} {b}" for a, b in track)
    return lines


# ---------------------------------------------------------------- binary

_MODEL_IDS = {name: i for i, name in enumerate(CAMERA_MODELS)}
_MODEL_NAMES = dict(enumerate(CAMERA_MODELS))
_CLOUD_RECORD = np.dtype(
    [("id", "<u8"), ("xyz", "<f8", (3,)), ("rgb", "u1", (3,)), ("error", "<f8"), ("track", "<u8")]
)  # 51 bytes, unpadded like COLMAP's


def write_model_binary(
    folder: str | os.PathLike[str],
    cameras: Mapping[int, Camera],
    images: Mapping[int, Image],
    points: Points | None = None,
) -> None:
    """Write cameras.bin, images.bin and points3D.bin (each atomically) in COLMAP's binary layout.

    Raises:
        InputError: a camera model COLMAP has no id for, or an image name with a NUL byte.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_open(folder / "cameras.bin", "wb") as f:
        f.write(struct.pack("<Q", len(cameras)))
        for c in cameras.values():
            if c.model not in _MODEL_IDS:
                raise InputError(
                    f"camera {c.id}: unknown camera model {c.model!r}", f"known: {', '.join(CAMERA_MODELS)}"
                )
            params = np.asarray(c.params, dtype="<f8")
            if len(params) != CAMERA_MODELS[c.model]:
                raise InputError(
                    f"camera {c.id}: {c.model} needs {CAMERA_MODELS[c.model]} parameters, got {len(params)}"
                )
            f.write(struct.pack("<iiQQ", c.id, _MODEL_IDS[c.model], c.width, c.height) + params.tobytes())
    with atomic_open(folder / "images.bin", "wb") as f:
        f.write(struct.pack("<Q", len(images)))
        for im in images.values():
            name = im.name.encode("utf-8")
            if b"\0" in name or not name:
                raise InputError(
                    f"image {im.id}: the name {im.name!r} cannot be stored (empty or holds a NUL byte)"
                )
            f.write(
                struct.pack(
                    "<i4d3di", im.id, *np.asarray(im.qvec, float), *np.asarray(im.tvec, float), im.camera_id
                )
            )
            f.write(name + b"\0")
            obs = np.zeros(len(im.xys), dtype=[("xy", "<f8", (2,)), ("id", "<i8")])
            obs["xy"], obs["id"] = im.xys, im.point3D_ids
            f.write(struct.pack("<Q", len(obs)) + obs.tobytes())
    with atomic_open(folder / "points3D.bin", "wb") as f:
        _write_points_binary(f, {} if points is None else points)


def _write_points_binary(f: BinaryIO, points: Points) -> None:
    f.write(struct.pack("<Q", len(points)))
    if isinstance(points, PointCloud):
        rec = np.zeros(len(points), dtype=_CLOUD_RECORD)
        rec["id"] = np.arange(points.first_id, points.first_id + len(points), dtype=np.uint64)
        rec["xyz"], rec["rgb"] = points.xyz, points.rgb
        rec["error"] = 0.0 if points.error is None else points.error
        if points.track_offsets is None:
            f.write(rec.tobytes())
            return
        lengths = points.track_lengths()
        rec["track"] = lengths
        elems = np.zeros(int(lengths.sum()), dtype=[("image", "<i4"), ("idx", "<i4")])
        elems["image"], elems["idx"] = points.track_image_ids, points.track_point2D_idxs
        # Interleave each 51-byte record with its track: element e of point p starts at 51 (p + 1) + 8 e.
        size = _CLOUD_RECORD.itemsize
        buf = np.empty(size * len(points) + 8 * len(elems), dtype=np.uint8)
        starts = size * np.arange(len(points), dtype=np.int64) + 8 * np.asarray(points.track_offsets[:-1])
        buf[starts[:, None] + np.arange(size)] = rec.view(np.uint8).reshape(-1, size)
        owner = np.repeat(np.arange(len(points), dtype=np.int64), lengths)
        elem_starts = size * (owner + 1) + 8 * np.arange(len(elems), dtype=np.int64)
        buf[elem_starts[:, None] + np.arange(8)] = elems.view(np.uint8).reshape(-1, 8)
        f.write(buf.tobytes())
        return
    for p in points.values():
        track = np.zeros(len(p.image_ids), dtype=[("image", "<i4"), ("idx", "<i4")])
        track["image"], track["idx"] = p.image_ids, p.point2D_idxs
        f.write(struct.pack("<Q3d3BdQ", p.id, *np.asarray(p.xyz, float), *(int(v) for v in p.rgb),
                            float(p.error), len(track)) + track.tobytes())  # fmt: skip


class _Bin:
    """A cursor over one binary file whose errors name the file and the byte offset."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data = path.read_bytes()
        except OSError as e:
            raise InputError(f"cannot read {path}: {e.strerror}", "check the model folder is complete") from e
        self.pos = 0

    def unpack(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise InputError(
                f"{self.path}: truncated at byte {self.pos} of {len(self.data)} (expected {size} more bytes)",
                "the file was cut short: write or copy the model again",
            )
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values

    def array(self, dtype: np.dtype, count: int) -> np.ndarray:
        size = dtype.itemsize * count
        if self.pos + size > len(self.data):
            self.unpack(f"{size}x")  # raises the truncation error
        out = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
        self.pos += size
        return out

    def cstring(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise InputError(
                f"{self.path}: unterminated image name at byte {self.pos}", "the file was cut short"
            )
        text = self.data[self.pos : end].decode("utf-8", "replace")
        self.pos = end + 1
        return text

    def done(self) -> None:
        if self.pos != len(self.data):
            raise InputError(
                f"{self.path}: {len(self.data) - self.pos} unexpected bytes after the last record",
                _BAD_MODEL_HINT,
            )


def read_cameras_binary(path: str | os.PathLike[str]) -> dict[int, Camera]:
    b = _Bin(Path(path))
    cams: dict[int, Camera] = {}
    for _ in range(b.unpack("<Q")[0]):
        at = b.pos
        cid, model_id, width, height = b.unpack("<iiQQ")
        if model_id not in _MODEL_NAMES:
            raise InputError(
                f"{b.path}: camera {cid} at byte {at} has unknown model id {model_id}", _BAD_MODEL_HINT
            )
        model = _MODEL_NAMES[model_id]
        params = b.array(np.dtype("<f8"), CAMERA_MODELS[model]).astype(np.float64)
        cams[cid] = Camera(cid, model, int(width), int(height), params)
    b.done()
    return cams


def read_images_binary(path: str | os.PathLike[str]) -> dict[int, Image]:
    b = _Bin(Path(path))
    images: dict[int, Image] = {}
    obs_dtype = np.dtype([("xy", "<f8", (2,)), ("id", "<i8")])
    for _ in range(b.unpack("<Q")[0]):
        iid, qw, qx, qy, qz, tx, ty, tz, cam = b.unpack("<i4d3di")
        name = b.cstring()
        obs = b.array(obs_dtype, b.unpack("<Q")[0])
        images[iid] = Image(iid, np.array([qw, qx, qy, qz]), np.array([tx, ty, tz]), cam, name,
                            obs["xy"].astype(np.float64), obs["id"].astype(np.int64))  # fmt: skip
    b.done()
    return images


def read_points3D_binary(path: str | os.PathLike[str]) -> dict[int, Point3D]:
    b = _Bin(Path(path))
    pts: dict[int, Point3D] = {}
    track_dtype = np.dtype([("image", "<i4"), ("idx", "<i4")])
    for _ in range(b.unpack("<Q")[0]):
        pid, x, y, z, r, g, bl, err, n = b.unpack("<Q3d3BdQ")
        track = b.array(track_dtype, n)
        pts[pid] = Point3D(pid, np.array([x, y, z]), np.array([r, g, bl], dtype=np.uint8), err,
                           track["image"].astype(np.int64), track["idx"].astype(np.int64))  # fmt: skip
    b.done()
    return pts


def read_model_binary(
    folder: str | os.PathLike[str],
) -> tuple[dict[int, Camera], dict[int, Image], dict[int, Point3D]]:
    folder = Path(folder)
    pts_path = folder / "points3D.bin"
    points = read_points3D_binary(pts_path) if pts_path.exists() else {}
    return read_cameras_binary(folder / "cameras.bin"), read_images_binary(folder / "images.bin"), points


def model_format(folder: str | os.PathLike[str]) -> str:
    """``bin`` or ``txt``: what the folder holds, binary first as COLMAP itself reads it.

    Raises:
        InputError: neither cameras.bin nor cameras.txt is there.
    """
    folder = Path(folder)
    if (folder / "cameras.bin").is_file():
        return "bin"
    if (folder / "cameras.txt").is_file():
        return "txt"
    raise InputError(
        f"{folder} holds no COLMAP model (no cameras.bin or cameras.txt)", "point to the model's folder"
    )


def read_model(
    folder: str | os.PathLike[str],
) -> tuple[dict[int, Camera], dict[int, Image], dict[int, Point3D]]:
    """Read a binary or text model, whichever the folder holds (binary first, as COLMAP does)."""
    return read_model_binary(folder) if model_format(folder) == "bin" else read_model_text(folder)


def write_model(
    folder: str | os.PathLike[str],
    cameras: Mapping[int, Camera],
    images: Mapping[int, Image],
    points: Points | None = None,
    fmt: str = "bin",
) -> list[Path]:
    """Write a model as ``bin`` (COLMAP's default) or ``txt``; returns the three files written.

    The other format's files of the same model are removed, so a folder never holds two different models
    (COLMAP would read the binary one).

    Raises:
        UsageError: ``fmt`` is neither ``bin`` nor ``txt``.
        InputError: see :func:`write_model_text` and :func:`write_model_binary`.
    """
    if fmt not in FORMATS:
        raise UsageError(
            f"COLMAP format {fmt!r} is not one of {', '.join(FORMATS)}", "use bin (COLMAP's default) or txt"
        )
    folder = Path(folder)
    (write_model_binary if fmt == "bin" else write_model_text)(folder, cameras, images, points)
    other = "txt" if fmt == "bin" else "bin"
    for stem in ("cameras", "images", "points3D"):
        (folder / f"{stem}.{other}").unlink(missing_ok=True)
    return [folder / f"{stem}.{fmt}" for stem in ("cameras", "images", "points3D")]
