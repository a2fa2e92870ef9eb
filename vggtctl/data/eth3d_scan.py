"""One ETH3D laser scan (:class:`Eth3dScan`): scanner-local points and their world transform.

A plain record read by :func:`vggtctl.data.eth3d.read_scans` and scored by
``vggtctl.services.metrics.eth3d_protocol``; it lives here, below both, so the reader needs nothing
from the services.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Eth3dScan:
    """One laser scan: its points in the scanner's own frame and where that frame sits in the world.

    Attributes:
        points: ``[N, 3]`` float32 scanner-local points (scanner at the origin, z up).
        global_T_mesh: ``[4, 4]`` world ← scan transform (MeshLab ``MLMatrix44``).
        name: The scan's file name, for messages.
    """

    points: np.ndarray
    global_T_mesh: np.ndarray
    name: str = "scan"

    def world_points(self) -> np.ndarray:
        """The points in world coordinates, float32 (as ETH3D's evaluation program transforms them)."""
        return _affine(np.asarray(self.global_T_mesh, dtype=np.float32), self.points)


def _affine(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``m[:3, :3] @ p + m[:3, 3]`` in float32, summed as PCL's SSE transform does.

    The order of the float32 additions (``m0·x + (m1·y + (m2·z + t))``) decides which side of a voxel
    boundary a point on a grid-aligned surface lands, so it is kept, and no BLAS (with its fused
    multiply-adds) is used.
    """
    p = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    out = np.empty_like(p)
    for r in range(3):
        out[:, r] = m[r, 0] * x + (m[r, 1] * y + (m[r, 2] * z + m[r, 3]))
    return out
