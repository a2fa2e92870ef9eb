"""Procedural ETH3D-layout scenes with exact ground truth, for tests, the demo and benchmarks.

Each scene is a textured brick facade with depth relief (pilasters, cornice, window panes and sills, a
balcony), a tiled ground plane and a few crates, seen by ``views`` cameras along an arc in front of it.
Everything is ray-cast against axis-aligned boxes and a plane, so depth is exact by construction:

* undistorted images (PINHOLE, 2 samples per pixel) and distorted originals (THIN_PRISM_FISHEYE, every
  pixel ray obtained by inverting the full model),
* raw ground-truth z-depth of the *distorted* pixel centres (+inf for sky and for masked pixels),
* masks (1 = window glass: unreliable colour, 2 = a "passer-by" present in only some views, excluded
  from the ground truth exactly like ETH3D's moving people),
* two laser "scans" (spherical ray grids from scanner stations, stored in scanner-local frames) with a
  ``scan_alignment.mlp`` that maps them back,
* optionally the per-kind ``<scene>_dslr_<kind>.7z`` archives plus a ``manifest.json`` for
  ``vggtctl download eth3d --manifest``.

World frame: metres, z up, the facade's front face is the plane y = 0 facing -y.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vggtctl.data import camera_models
from vggtctl.errors import Problem, raise_problems
from vggtctl.io.colmap import Camera, Image, read_model_text, rotmat_to_qvec, write_model_text
from vggtctl.io.ply import write_ply
from vggtctl.utils.atomic import atomic_write_json, remove_stale_staging

# materials
GROUND, BRICK, PLASTER, GLASS, CRATE, PERSON = range(6)
SKY = -1
GROUND_HALF_SIZE = 40.0

# kind -> folders (relative to the scene) that the real ``<scene>_dslr_<kind>.7z`` archive holds
ARCHIVE_KINDS: dict[str, tuple[str, ...]] = {
    "undistorted": ("images/dslr_images_undistorted", "dslr_calibration_undistorted"),
    "jpg": ("images/dslr_images", "dslr_calibration_jpg"),
    "depth": ("ground_truth_depth",),
    "occlusion": ("masks_for_images",),
    "scan_eval": ("dslr_scan_eval",),
}

_SUN = np.array([-0.45, -0.6, 0.66])


@dataclass
class Box:
    """An axis-aligned box ``lo <= p <= hi`` with a material and a colour."""

    lo: np.ndarray
    hi: np.ndarray
    material: int
    color: np.ndarray = field(default_factory=lambda: np.array([0.6, 0.6, 0.6]))


@dataclass
class SceneSpec:
    """The geometry and appearance of one synthetic scene (static part; passers-by are per view)."""

    boxes: list[Box]
    noise: np.ndarray  # (256, 256) value-noise lattice
    brick_color: np.ndarray
    ground_color: np.ndarray
    sun: np.ndarray = field(default_factory=lambda: _SUN / np.linalg.norm(_SUN))


@dataclass
class Hit:
    """Ray-cast result per ray: distance along the (unnormalised) direction, surface normal, box, material."""

    t: np.ndarray
    normal: np.ndarray
    box: np.ndarray  # -1 ground, -2 sky, else box index
    material: np.ndarray


def build_scene(rng: np.random.Generator) -> SceneSpec:
    """Random facade, ground crates and colours."""
    boxes: list[Box] = []
    half_w = rng.uniform(5.0, 7.0)
    height = rng.uniform(6.0, 8.0)
    boxes.append(Box(np.array([-half_w, 0.0, 0.0]), np.array([half_w, 0.5, height]), BRICK))
    # cornice along the top and a plinth at the bottom
    boxes.append(
        Box(np.array([-half_w - 0.2, -0.35, height - 0.45]), np.array([half_w + 0.2, 0.0, height]), PLASTER)
    )
    boxes.append(Box(np.array([-half_w, -0.12, 0.0]), np.array([half_w, 0.0, 0.5]), PLASTER))
    # pilasters
    n_pil = int(rng.integers(3, 6))
    for x in np.linspace(-half_w + 0.4, half_w - 0.4, n_pil):
        boxes.append(Box(np.array([x - 0.22, -0.22, 0.5]), np.array([x + 0.22, 0.0, height - 0.45]), PLASTER))
    # windows between pilasters, two or three floors
    xs = np.linspace(-half_w + 0.4, half_w - 0.4, n_pil)
    floors = int(rng.integers(2, 4))
    floor_h = (height - 1.2) / floors
    for k in range(floors):
        z0 = 1.0 + k * floor_h + 0.25 * floor_h
        z1 = z0 + 0.5 * floor_h
        for a, b in zip(xs[:-1], xs[1:], strict=True):
            cx, w = (a + b) / 2, min(1.3, (b - a) * 0.45)
            boxes.append(Box(np.array([cx - w / 2, -0.03, z0]), np.array([cx + w / 2, 0.0, z1]), GLASS))
            boxes.append(
                Box(
                    np.array([cx - w / 2 - 0.1, -0.15, z0 - 0.12]),
                    np.array([cx + w / 2 + 0.1, 0.0, z0]),
                    PLASTER,
                )
            )
    # a balcony on the first floor
    bx = rng.uniform(-half_w / 2, half_w / 2)
    bz = 1.0 + floor_h
    boxes.append(Box(np.array([bx - 1.2, -1.0, bz - 0.15]), np.array([bx + 1.2, 0.0, bz + 0.05]), PLASTER))
    boxes.append(Box(np.array([bx - 1.2, -1.0, bz + 0.05]), np.array([bx + 1.2, -0.92, bz + 0.95]), PLASTER))
    # crates on the ground
    for _ in range(int(rng.integers(2, 5))):
        sx, sy, sz = rng.uniform(0.5, 1.3), rng.uniform(0.5, 1.2), rng.uniform(0.4, 1.4)
        x, y = rng.uniform(-half_w + 1, half_w - 1), rng.uniform(-5.0, -1.5)
        color = rng.uniform(0.25, 0.85, size=3)
        boxes.append(
            Box(np.array([x - sx / 2, y - sy / 2, 0.0]), np.array([x + sx / 2, y + sy / 2, sz]), CRATE, color)
        )
    brick = np.array([0.62, 0.30, 0.20]) * rng.uniform(0.8, 1.2, size=3)
    ground = np.array([0.55, 0.55, 0.52]) * rng.uniform(0.85, 1.15, size=3)
    return SceneSpec(
        boxes=boxes, noise=rng.random((256, 256)), brick_color=np.clip(brick, 0, 1), ground_color=ground
    )


def _slab(
    o: np.ndarray, d: np.ndarray, inv: np.ndarray, box: Box
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entry/exit distances of rays ``o + t d`` through a box and the axis of the entry face."""
    tlo = []
    thi = []
    for a in range(3):
        t1 = (box.lo[a] - o[..., a]) * inv[:, a]
        t2 = (box.hi[a] - o[..., a]) * inv[:, a]
        lo_, hi_ = np.minimum(t1, t2), np.maximum(t1, t2)
        # a ray parallel to a slab and lying in its boundary gives 0 * inf = NaN: treat as unbounded
        tlo.append(np.where(np.isnan(lo_), -np.inf, lo_))
        thi.append(np.where(np.isnan(hi_), np.inf, hi_))
    tmin = np.maximum(np.maximum(tlo[0], tlo[1]), tlo[2])
    tmax = np.minimum(np.minimum(thi[0], thi[1]), thi[2])
    axis = np.where(tlo[0] >= np.maximum(tlo[1], tlo[2]), 0, np.where(tlo[1] >= tlo[2], 1, 2))
    return tmin, tmax, axis


def _corners(box: Box) -> np.ndarray:
    return np.array([[x, y, z] for x in (box.lo[0], box.hi[0]) for y in (box.lo[1], box.hi[1])
                     for z in (box.lo[2], box.hi[2])])  # fmt: skip


class _RayIndex:
    """Rays sorted by one 2-D coordinate so a box's footprint is found with a binary search.

    ``coords`` are 2-D positions of the rays such that every ray hitting a box lies inside the 2-D
    bounding rectangle of the box's projected corners (central projection for rays from one origin,
    orthographic projection for parallel shadow rays).
    """

    def __init__(self, coords: np.ndarray) -> None:
        self.order = np.argsort(coords[:, 1], kind="stable")
        self.b = coords[self.order, 1]
        self.a = coords[self.order, 0]

    def candidates(self, rect: tuple[float, float, float, float] | None) -> np.ndarray:
        if rect is None:
            return self.order
        amin, amax, bmin, bmax = rect
        i0 = int(np.searchsorted(self.b, bmin, side="left"))
        i1 = int(np.searchsorted(self.b, bmax, side="right"))
        a = self.a[i0:i1]
        return self.order[i0:i1][(a >= amin) & (a <= amax)]


def raycast(origin: np.ndarray, dirs: np.ndarray, boxes: Sequence[Box], ground: bool = True) -> Hit:
    """Exact first hit of rays ``origin + t * dirs`` against ``boxes`` and the ground plane z = 0.

    Args:
        origin: ``(3,)`` ray origin (outside all boxes).
        dirs: ``(N, 3)`` directions (need not be unit: ``t`` is in units of ``dirs``).
        boxes: the boxes to test.
        ground: include the plane z = 0.

    Returns:
        A :class:`Hit`; ``t`` is +inf and ``box`` -2 where nothing is hit.
    """
    n = len(dirs)
    t_best = np.full(n, np.inf)
    box_id = np.full(n, -2, dtype=np.int64)
    axis = np.zeros(n, dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dirs
        if ground:
            tg = np.where(dirs[:, 2] < 0, -origin[2] * inv[:, 2], np.inf)
            gx, gy = origin[0] + tg * dirs[:, 0], origin[1] + tg * dirs[:, 1]
            # a finite square of ground: beyond it is sky, so depth stays within ~60 m like a real scene
            better = (
                (tg > 1e-9)
                & (tg < t_best)
                & (np.abs(gx) < GROUND_HALF_SIZE)
                & (np.abs(gy) < GROUND_HALF_SIZE)
            )
            t_best[better] = tg[better]
            box_id[better] = -1
            axis[better] = 2
        # central projection of the rays around their mean direction, to cull boxes per ray
        w = dirs.mean(axis=0)
        w /= np.linalg.norm(w)
        u = np.cross(w, [0.0, 0.0, 1.0] if abs(w[2]) < 0.9 else [1.0, 0.0, 0.0])
        u /= np.linalg.norm(u)
        v = np.cross(w, u)
        dw = dirs @ w
        index = _RayIndex(np.stack([(dirs @ u) / dw, (dirs @ v) / dw], axis=1)) if (dw > 1e-6).all() else None
        for b, box in enumerate(boxes):
            rect = None
            if index is not None:
                c = _corners(box) - origin
                cw = c @ w
                if (cw > 1e-6).all():
                    pa, pb = (c @ u) / cw, (c @ v) / cw
                    rect = (pa.min(), pa.max(), pb.min(), pb.max())
            sel = index.candidates(rect) if index is not None else np.arange(n)
            if sel.size == 0:
                continue
            tmin, tmax, ax = _slab(origin, dirs[sel], inv[sel], box)
            better = (tmin <= tmax) & (tmin > 1e-9) & (tmin < t_best[sel])
            idx = sel[better]
            t_best[idx] = tmin[better]
            box_id[idx] = b
            axis[idx] = ax[better]
    # the entry face's normal points against the ray
    normal = np.zeros((n, 3))
    rows = np.arange(n)
    normal[rows, axis] = -np.sign(dirs[rows, axis])
    normal[box_id == -1] = (0.0, 0.0, 1.0)
    material = np.full(n, SKY, dtype=np.int64)
    material[box_id == -1] = GROUND
    has_box = box_id >= 0
    if has_box.any():
        mats = np.array([bx.material for bx in boxes])
        material[has_box] = mats[box_id[has_box]]
    return Hit(t_best, normal, box_id, material)


def _noise(lattice: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear value noise on a wrapping lattice."""
    n = lattice.shape[0]
    u0, v0 = np.floor(u), np.floor(v)
    fu, fv = u - u0, v - v0
    fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    i0, j0 = u0.astype(np.int64) % n, v0.astype(np.int64) % n
    i1, j1 = (i0 + 1) % n, (j0 + 1) % n
    a = lattice[i0, j0] * (1 - fu) + lattice[i1, j0] * fu
    b = lattice[i0, j1] * (1 - fu) + lattice[i1, j1] * fu
    return a * (1 - fv) + b * fv


def _fbm(lattice: np.ndarray, u: np.ndarray, v: np.ndarray, octaves: int = 3) -> np.ndarray:
    out = np.zeros_like(u)
    amp, freq = 0.5, 1.0
    for _ in range(octaves):
        out += amp * _noise(lattice, u * freq, v * freq)
        amp, freq = amp * 0.5, freq * 2.0
    return out / (1 - 0.5**octaves)


def _hash2(i: np.ndarray, j: np.ndarray) -> np.ndarray:
    x = np.sin(i * 12.9898 + j * 78.233) * 43758.5453
    return x - np.floor(x)


def _albedo(spec: SceneSpec, p: np.ndarray, hit: Hit, boxes: Sequence[Box]) -> np.ndarray:
    n = len(p)
    col = np.zeros((n, 3))
    lat = spec.noise
    ax = np.abs(hit.normal).argmax(axis=1)
    # texture coordinates: the two world axes across the face, vertical last where possible
    u = np.where(ax == 0, p[:, 1], p[:, 0])
    v = np.where(ax == 2, p[:, 1], p[:, 2])
    m = hit.material
    g = m == GROUND
    if g.any():
        tu, tv = np.floor(p[g, 0] / 0.6), np.floor(p[g, 1] / 0.6)
        shade = 0.8 + 0.35 * _hash2(tu, tv)
        fu, fv = p[g, 0] / 0.6 - tu, p[g, 1] / 0.6 - tv
        joint = np.minimum(np.minimum(fu, 1 - fu), np.minimum(fv, 1 - fv)) < 0.04
        grain = 0.75 + 0.5 * _fbm(lat, p[g, 0] * 3.0, p[g, 1] * 3.0)
        col[g] = spec.ground_color * (shade * grain * np.where(joint, 0.55, 1.0))[:, None]
    b = m == BRICK
    if b.any():
        row = np.floor(v[b] / 0.09)
        uu = u[b] / 0.25 + 0.5 * (row % 2)
        brick = np.floor(uu)
        fu, fv = uu - brick, v[b] / 0.09 - row
        mortar = (np.minimum(fu, 1 - fu) < 0.05) | (np.minimum(fv, 1 - fv) < 0.1)
        var = 0.75 + 0.5 * _hash2(brick, row)
        base = spec.brick_color * var[:, None] * (0.85 + 0.3 * _fbm(lat, u[b] * 6, v[b] * 6))[:, None]
        col[b] = np.where(mortar[:, None], np.array([0.78, 0.76, 0.72]), base)
    pl = m == PLASTER
    if pl.any():
        col[pl] = (
            np.array([0.86, 0.82, 0.72]) * (0.85 + 0.25 * _fbm(lat, u[pl] * 2 + 31, v[pl] * 2 + 17))[:, None]
        )
    gl = m == GLASS
    if gl.any():
        refl = _fbm(lat, u[gl] * 0.7 + 5, v[gl] * 1.5 + 9)
        col[gl] = np.array([0.12, 0.18, 0.26]) + np.array([0.35, 0.4, 0.45]) * (refl**2)[:, None]
    c = m == CRATE
    if c.any():
        colors = np.array([bx.color for bx in boxes])[hit.box[c]]
        plank = 0.8 + 0.25 * np.sin(v[c] * 40 + 6 * _fbm(lat, u[c] * 4, v[c] * 0.5)) * 0.5
        edge = 0.9 + 0.2 * _fbm(lat, u[c] * 8 + 3, v[c] * 8 + 7)
        col[c] = colors * (plank * edge)[:, None]
    pe = m == PERSON
    if pe.any():
        top = p[pe, 2] > np.array([bx.lo[2] + 0.55 * (bx.hi[2] - bx.lo[2]) for bx in boxes])[hit.box[pe]]
        col[pe] = np.where(top[:, None], np.array([0.7, 0.15, 0.12]), np.array([0.15, 0.17, 0.3]))
    return col


def _shade(
    spec: SceneSpec, origin: np.ndarray, dirs: np.ndarray, boxes: Sequence[Box]
) -> tuple[np.ndarray, Hit]:
    hit = raycast(origin, dirs, boxes)
    rgb = np.zeros((len(dirs), 3))
    sky = hit.box == -2
    if sky.any():
        elev = dirs[sky, 2] / np.linalg.norm(dirs[sky], axis=1)
        rgb[sky] = (
            np.array([0.92, 0.94, 0.97]) * (1 - elev[:, None]) + np.array([0.45, 0.62, 0.9]) * elev[:, None]
        )
    s = ~sky
    if s.any():
        p = origin + dirs[s] * hit.t[s, None]
        sub = Hit(hit.t[s], hit.normal[s], hit.box[s], hit.material[s])
        alb = _albedo(spec, p, sub, boxes)
        ndl = np.clip(sub.normal @ spec.sun, 0.0, None)
        lit = ndl > 0
        shadow = np.ones(len(p))
        if lit.any():
            q = p[lit] + sub.normal[lit] * 1e-4
            occluded = _occluded(q, spec.sun, boxes)
            shadow[lit] = np.where(occluded, 0.0, 1.0)
        light = 0.38 + 0.75 * ndl * shadow
        dist = hit.t[s] * np.linalg.norm(dirs[s], axis=1)
        fog = np.exp(-dist / 120.0)[:, None]
        rgb[s] = (alb * light[:, None]) * fog + np.array([0.85, 0.88, 0.92]) * (1 - fog)
    return rgb, hit


def _occluded(points: np.ndarray, direction: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """Whether the ray from each point towards ``direction`` hits any box (shadow test)."""
    occ = np.zeros(len(points), dtype=bool)
    w = direction / np.linalg.norm(direction)
    u = np.cross(w, [0.0, 0.0, 1.0])
    u /= np.linalg.norm(u)
    v = np.cross(w, u)
    index = _RayIndex(np.stack([points @ u, points @ v], axis=1))
    d = np.broadcast_to(direction, (1, 3))
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        for box in boxes:
            c = _corners(box)
            pa, pb = c @ u, c @ v
            sel = index.candidates((pa.min(), pa.max(), pb.min(), pb.max()))
            sel = sel[~occ[sel]]
            if sel.size == 0:
                continue
            tmin, tmax, _ = _slab(points[sel], d, inv, box)
            occ[sel] |= (tmax >= np.maximum(tmin, 0.0)) & (tmax > 1e-6)
    return occ


@dataclass
class _View:
    R: np.ndarray
    t: np.ndarray
    person: Box | None


def _look_at(center: np.ndarray, target: np.ndarray, roll: float) -> np.ndarray:
    z = target - center
    z /= np.linalg.norm(z)
    x = np.cross(z, np.array([0.0, 0.0, 1.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    c, s = np.cos(roll), np.sin(roll)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ R


def _make_views(rng: np.random.Generator, views: int) -> list[_View]:
    out = []
    angles = (
        np.linspace(-0.6, 0.6, views) + rng.uniform(-0.05, 0.05, size=views) if views > 1 else np.zeros(1)
    )
    for k, a in enumerate(angles):
        dist = rng.uniform(9.0, 12.5)
        center = np.array([dist * np.sin(a), -dist * np.cos(a), rng.uniform(1.4, 2.4)])
        target = np.array([rng.uniform(-1.5, 1.5), 0.0, rng.uniform(2.2, 3.4)])
        R = _look_at(center, target, rng.uniform(-0.04, 0.04))
        person = None
        if k % 2 == 1:  # a passer-by in every other view: a moving object, masked like ETH3D's people
            px, py = rng.uniform(-3.0, 3.0), rng.uniform(-4.5, -2.0)
            person = Box(
                np.array([px - 0.25, py - 0.15, 0.0]), np.array([px + 0.25, py + 0.15, 1.75]), PERSON
            )
        out.append(_View(R, -R @ center, person))
    return out


def _to_uint8(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    img = np.clip(rgb, 0, 1) ** (1 / 1.15) * 255.0 + rng.normal(0.0, 1.2, size=rgb.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _save_jpeg(path: Path, img: np.ndarray) -> None:
    from PIL import Image as PILImage

    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(img).save(path, format="JPEG", quality=95)


def _cameras(
    rng: np.random.Generator, width: int, height: int
) -> tuple[dict[int, Camera], dict[int, Camera]]:
    """Two physical cameras: THIN_PRISM_FISHEYE originals and PINHOLE undistorted (same focal length)."""
    wd, hd = round(width / 1.024), round(height / 1.024)
    dist: dict[int, Camera] = {}
    und: dict[int, Camera] = {}
    for cid in (0, 1):
        f = wd * rng.uniform(0.56, 0.64)
        fx, fy = f, f * rng.uniform(0.998, 1.002)
        cx, cy = wd / 2 + rng.uniform(-3, 3), hd / 2 + rng.uniform(-2, 2)
        k1, k2 = rng.uniform(0.03, 0.08), rng.uniform(0.0, 0.03)
        p1, p2 = rng.uniform(-4e-4, 4e-4), rng.uniform(-4e-4, 4e-4)
        k3, k4 = rng.uniform(-0.02, 0.0), rng.uniform(0.0, 0.02)
        sx1, sy1 = rng.uniform(-6e-4, 6e-4), rng.uniform(-6e-4, 6e-4)
        params = np.round([fx, fy, cx, cy, k1, k2, p1, p2, k3, k4, sx1, sy1], 8)
        dist[cid] = Camera(cid, "THIN_PRISM_FISHEYE", wd, hd, params)
        und[cid] = Camera(cid, "PINHOLE", width, height,
                          np.round([fx, fy, cx + (width - wd) / 2, cy + (height - hd) / 2], 8))  # fmt: skip
    return dist, und


def _world_dirs(camera: Camera, R: np.ndarray, pix: np.ndarray) -> np.ndarray:
    n = camera_models.cam_from_img(camera, pix.reshape(-1, 2))
    d = np.concatenate([n, np.ones((len(n), 1))], axis=1)  # z = 1: the hit distance t is the z-depth
    return d @ R  # rows: R^T d


def _render_scene(scene_dir: Path, rng: np.random.Generator, views: int, width: int, height: int) -> None:
    spec = build_scene(rng)
    dist_cams, und_cams = _cameras(rng, width, height)
    view_list = _make_views(rng, views)
    images: dict[int, Image] = {}
    dist_images: dict[int, Image] = {}
    for k, v in enumerate(view_list):
        iid, cid = 10 + 3 * k, k % 2  # ids are arbitrary in COLMAP/ETH3D; not 0..N-1 on purpose
        q = rotmat_to_qvec(v.R)
        images[iid] = Image(iid, q, v.t.copy(), cid, f"dslr_images_undistorted/DSC_{k:04d}.JPG")
        dist_images[iid] = Image(iid, q, v.t.copy(), cid, f"dslr_images/DSC_{k:04d}.JPG")
    write_model_text(scene_dir / "dslr_calibration_undistorted", und_cams, images, {})
    write_model_text(scene_dir / "dslr_calibration_jpg", dist_cams, dist_images, {})
    # render from the calibration as written, so the files are exact by construction
    und_cams, images, _ = read_model_text(scene_dir / "dslr_calibration_undistorted")
    dist_cams, dist_images, _ = read_model_text(scene_dir / "dslr_calibration_jpg")
    for (iid, im), v in zip(sorted(images.items()), view_list, strict=True):
        R, t = im.rotation(), im.tvec
        origin = -R.T @ t
        boxes = spec.boxes + ([v.person] if v.person is not None else [])
        stem = im.name.rsplit("/", 1)[-1]
        # undistorted image: two rotated-grid samples per pixel against aliasing of the brick texture
        cu = und_cams[im.camera_id]
        acc = np.zeros((cu.height * cu.width, 3))
        base = camera_models.pixel_centers(cu.width, cu.height)
        for offset in ((-0.25, -0.125), (0.25, 0.125)):
            rgb, _ = _shade(spec, origin, _world_dirs(cu, R, base + np.array(offset)), boxes)
            acc += rgb
        _save_jpeg(scene_dir / "images" / im.name, _to_uint8((acc / 2).reshape(cu.height, cu.width, 3), rng))
        # distorted original, depth and mask at the distorted pixel centres
        cd = dist_cams[dist_images[iid].camera_id]
        dirs = _world_dirs(cd, R, camera_models.pixel_centers(cd.width, cd.height))
        rgb, hit = _shade(spec, origin, dirs, boxes)
        _save_jpeg(
            scene_dir / "images" / "dslr_images" / stem, _to_uint8(rgb.reshape(cd.height, cd.width, 3), rng)
        )
        mask = np.zeros(len(dirs), dtype=np.uint8)
        mask[hit.material == GLASS] = 1
        mask[hit.material == PERSON] = 2
        depth = np.where((hit.box == -2) | (mask == 2), np.inf, hit.t).astype("<f4")
        dpath = scene_dir / "ground_truth_depth" / "dslr_images" / stem
        dpath.parent.mkdir(parents=True, exist_ok=True)
        depth.tofile(dpath)
        if mask.any():
            from PIL import Image as PILImage

            mpath = scene_dir / "masks_for_images" / "dslr_images" / Path(stem).with_suffix(".png")
            mpath.parent.mkdir(parents=True, exist_ok=True)
            PILImage.fromarray(mask.reshape(cd.height, cd.width)).save(mpath, format="PNG")
    _write_scans(scene_dir / "dslr_scan_eval", spec, rng)


def _write_scans(folder: Path, spec: SceneSpec, rng: np.random.Generator) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    meshes = []
    for k in range(2):
        center = np.array([rng.uniform(-4.0, 4.0), rng.uniform(-9.0, -6.0), rng.uniform(1.2, 1.8)])
        az = np.deg2rad(np.linspace(20, 160, 220))  # facing +y
        el = np.deg2rad(np.linspace(-40, 50, 120))
        A, E = np.meshgrid(az, el)
        dirs = np.stack([np.cos(E) * np.cos(A), np.cos(E) * np.sin(A), np.sin(E)], axis=-1).reshape(-1, 3)
        hit = raycast(center, dirs, spec.boxes)
        ok = np.isfinite(hit.t) & (hit.t < 40.0)
        pts = center + dirs[ok] * hit.t[ok, None]
        yaw = rng.uniform(-np.pi, np.pi)
        c, s = np.cos(yaw), np.sin(yaw)
        T = np.eye(4)
        T[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
        T[:3, 3] = center
        local = (pts - T[:3, 3]) @ T[:3, :3]  # R^T (p - c)
        name = f"scan{k + 1}.ply"
        write_ply(folder / name, local.astype(np.float32))
        meshes.append((name, T))
    lines = ["<!DOCTYPE MeshLabDocument>", "<MeshLabProject>", " <MeshGroup>"]
    for name, T in meshes:
        lines.append(f'  <MLMesh label="{name}" filename="{name}">')
        rows = " ".join(repr(float(x)) for x in T.reshape(-1))
        lines.append(f"   <MLMatrix44>\n{rows} \n</MLMatrix44>")
        lines.append("  </MLMesh>")
    lines += [" </MeshGroup>", " <RasterGroup/>", "</MeshLabProject>"]
    (folder / "scan_alignment.mlp").write_text("\n".join(lines) + "\n", encoding="utf-8")


def scene_names(scenes: int) -> list[str]:
    """``synth_000``, ``synth_001``, ..."""
    return [f"synth_{i:03d}" for i in range(scenes)]


def write_archives(scene_dir: Path, out_dir: Path) -> dict[str, dict[str, object]]:
    """Pack a scene into the per-kind ``<scene>_dslr_<kind>.7z`` archives, members under ``<scene>/``.

    Returns:
        ``{archive file name: {"bytes": N, "sha256": hex}}`` for the archives written.
    """
    import py7zr

    out_dir.mkdir(parents=True, exist_ok=True)
    entries: dict[str, dict[str, object]] = {}
    for kind, folders in ARCHIVE_KINDS.items():
        files = [p for f in folders for p in sorted((scene_dir / f).rglob("*")) if p.is_file()]
        if not files:
            continue
        name = f"{scene_dir.name}_dslr_{kind}.7z"
        remove_stale_staging(out_dir / name)
        tmp = out_dir / f".{name}.{os.getpid()}.tmp"
        try:
            with py7zr.SevenZipFile(tmp, "w") as z:
                for p in files:
                    z.write(p, arcname=f"{scene_dir.name}/{p.relative_to(scene_dir).as_posix()}")
                    _fix_member_times(z)
            os.replace(tmp, out_dir / name)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        data = (out_dir / name).read_bytes()
        entries[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return entries


# Archive members get this fixed time instead of the files' creation/modification/access times, so
# the same arguments give byte-identical archives (and manifest.json hashes) on every run.
ARCHIVE_MEMBER_TIME = 1577836800.0  # 2020-01-01T00:00:00Z


def _fix_member_times(z: Any) -> None:
    """Replace the timestamps py7zr took from the last written file's ``stat`` by ARCHIVE_MEMBER_TIME.

    py7zr has no option for this; it keeps each member's header entry in ``header.files_info.files``
    until ``close`` writes the header, so the entry can be changed after ``write``.
    """
    from py7zr.helpers import ArchiveTimestamp

    info = z.header.files_info.files[-1]
    for key in ("creationtime", "lastwritetime", "lastaccesstime"):
        info[key] = ArchiveTimestamp.from_datetime(ARCHIVE_MEMBER_TIME)


def check_synthetic(scenes: int, views: int, seed: int, width: int = 320, height: int = 213) -> list[Problem]:
    """Every bad argument of :func:`generate_scenes`, as problems about their values (empty: all good)."""
    problems: list[Problem] = []
    if scenes < 1:
        problems.append(Problem.of("scenes", "at least 1 scene", scenes))
    if views < 1:
        problems.append(Problem.of("views", "at least 1 view per scene", views))
    if seed < 0:
        problems.append(Problem.of("seed", "a seed is a non-negative integer", seed))
    if width < 16 or height < 16:
        problems.append(Problem.of(("width", "height"), f"at least 16x16 pixels, got {width}x{height}"))
    return problems


def generate_scenes(
    out: str | os.PathLike[str],
    scenes: int = 2,
    views: int = 6,
    seed: int = 0,
    width: int = 320,
    height: int = 213,
    archives: bool = False,
) -> list[Path]:
    """Render ``scenes`` synthetic scenes into ``out/synth_000`` ... in the exact ETH3D layout.

    Each scene is written into a temporary sibling folder and renamed into place when complete, so a
    crash never leaves a half-written scene. Same arguments give byte-identical files.

    Args:
        out: destination folder (created).
        scenes: number of scenes.
        views: cameras per scene.
        seed: base seed; scene ``i`` uses ``(seed, i)``.
        width: undistorted image width (originals are ~2.4 % smaller, like ETH3D's).
        height: undistorted image height.
        archives: also write ``out/archives/<scene>_dslr_<kind>.7z`` and ``out/archives/manifest.json``
            (``{archive: {"bytes", "sha256"}}``, the ``--manifest`` format of ``vggtctl download eth3d``).

    Returns:
        The scene folders.
    """
    raise_problems(
        "synthetic scene settings",
        check_synthetic(scenes, views, seed, width, height),
        "e.g. vggtctl download eth3d --synthetic --out demo_data --scenes 2 --views 6 --seed 0",
    )
    out = Path(out)
    # Folders this call creates are removed again if it stops before they hold anything.
    created = [*_missing_dirs(out / "archives" if archives else out)]
    try:
        return _generate(out, scenes, views, seed, width, height, archives)
    except BaseException:
        for d in created:  # deepest first; rmdir leaves any folder that has content
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


def _missing_dirs(folder: Path) -> list[Path]:
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _generate(
    out: Path, scenes: int, views: int, seed: int, width: int, height: int, archives: bool
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    manifest: dict[str, dict[str, object]] = {}
    for i, name in enumerate(scene_names(scenes)):
        rng = np.random.default_rng([seed, i])
        final = out / name
        remove_stale_staging(final)
        tmp = out / f".{name}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            _render_scene(tmp, rng, views, width, height)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        paths.append(final)
        if archives:
            manifest.update(write_archives(final, out / "archives"))
    if archives:
        atomic_write_json(out / "archives" / "manifest.json", manifest)
    return paths
