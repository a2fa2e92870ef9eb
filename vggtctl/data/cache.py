"""A content-keyed disk cache of ground-truth depth on the model grid.

An entry's key is the sha256 of everything the result depends on: the bytes of the source depth file
and of the mask, both cameras (model, size, parameters), both poses, the target geometry and
:data:`CODE_VERSION`. Nothing about the file's path or age is trusted: a re-downloaded or edited depth
map gets a new key. File hashes are remembered per process by (path, size, mtime, inode), so an epoch
hashes each file once, not once per draw.

An entry is a one-line JSON header (key, shape, payload sha256) and the little-endian float32 payload,
written atomically. A truncated, corrupt or foreign entry is logged, recomputed and rewritten, never
returned. The folder is safe to delete at any time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vggtctl.paths import gt_depth_cache_dir
from vggtctl.utils.atomic import atomic_write_bytes

log = logging.getLogger(__name__)

# Bump when the depth sampling or pooling changes: old entries then miss instead of lying.
CODE_VERSION = "gt-depth-1"
_MAGIC = b"VGGTCTL-GT-DEPTH 1\n"
_file_hashes: dict[tuple[str, int, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, remembered per process while its size, mtime and inode stay."""
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    hit = _file_hashes.get(memo)
    if hit is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        hit = _file_hashes[memo] = h.hexdigest()
    return hit


def _floats(a: Any) -> list[str]:
    return [float(v).hex() for v in np.asarray(a, dtype=np.float64).reshape(-1)]


def geometry_key(cam_u: Any, ext_u: np.ndarray, cam_d: Any, ext_d: np.ndarray, geom: Any) -> dict[str, Any]:
    """The target geometry of one frame as exact, JSON-ready values (floats in hex)."""
    return {
        "cam_u": [cam_u.model, int(cam_u.width), int(cam_u.height), _floats(cam_u.params)],
        "cam_d": [cam_d.model, int(cam_d.width), int(cam_d.height), _floats(cam_d.params)],
        "ext_u": _floats(ext_u),
        "ext_d": _floats(ext_d),
        "orig_hw": [int(v) for v in geom.orig_hw],
        "out_hw": [int(v) for v in geom.out_hw],
        "scale_xy": _floats(geom.scale_xy),
        "offset_xy": _floats(geom.offset_xy),
    }


@dataclass(frozen=True)
class DepthCache:
    """Model-grid ground-truth depth on disk under ``root`` (picklable: only the path is held)."""

    root: Path

    @classmethod
    def default(cls) -> DepthCache:
        """The cache under ``VGGTCTL_HOME`` (``$VGGTCTL_HOME/cache/gt_depth``)."""
        return cls(gt_depth_cache_dir())

    def key(self, depth_file: Path, mask_file: Path | None, geometry: dict[str, Any]) -> str:
        """The entry key of a frame: source bytes + target geometry + code version."""
        doc = {
            "version": CODE_VERSION,
            "depth_sha256": file_sha256(depth_file),
            "mask_sha256": file_sha256(mask_file) if mask_file is not None else None,
            "geometry": geometry,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.gtd"

    def load(self, key: str, shape: tuple[int, int]) -> np.ndarray | None:
        """The cached depth for ``key``, or None when absent or not trustworthy (then it is recomputed)."""
        path = self.path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            log.warning("cannot read cached ground-truth depth %s (%s); recomputing", path, e.strerror)
            return None
        try:
            if not data.startswith(_MAGIC):
                raise ValueError("not a ground-truth depth cache entry")
            head_end = data.index(b"\n", len(_MAGIC))
            head = json.loads(data[len(_MAGIC) : head_end])
            payload = data[head_end + 1 :]
            if head.get("key") != key or tuple(head.get("shape", ())) != tuple(shape):
                raise ValueError("entry belongs to another frame or geometry")
            if len(payload) != 4 * shape[0] * shape[1]:
                raise ValueError(f"payload is {len(payload)} bytes, expected {4 * shape[0] * shape[1]}")
            if hashlib.sha256(payload).hexdigest() != head.get("sha256"):
                raise ValueError("payload checksum mismatch")
        except (ValueError, TypeError, AttributeError) as e:
            log.warning("ignoring corrupt ground-truth depth cache entry %s (%s); recomputing", path, e)
            return None
        return np.frombuffer(payload, dtype="<f4").reshape(shape).astype(np.float32)

    def store(self, key: str, depth: np.ndarray) -> None:
        """Write an entry atomically; a cache that cannot be written is logged, never fatal."""
        arr = np.ascontiguousarray(depth, dtype="<f4")
        payload = arr.tobytes()
        head = {"key": key, "shape": list(arr.shape), "sha256": hashlib.sha256(payload).hexdigest()}
        path = self.path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, _MAGIC + json.dumps(head).encode() + b"\n" + payload)
        except OSError as e:
            log.warning("cannot write the ground-truth depth cache %s (%s); continuing without it", path, e)


def resolve_cache(cache: DepthCache | bool | str | os.PathLike[str] | None) -> DepthCache | None:
    """``True``: the default cache; ``False``/``None``: no cache; a path: a cache there."""
    if cache is True:
        return DepthCache.default()
    if cache is False or cache is None:
        return None
    if isinstance(cache, DepthCache):
        return cache
    return DepthCache(Path(cache))
