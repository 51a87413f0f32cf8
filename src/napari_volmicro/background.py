"""An optional smooth background field, added to the Gaussian sum.

The field is a coarse grid ``(gz, gy, gx)`` of model values (float32), with
node ``i`` of an axis of ``n`` voxels at voxel coordinate ``i * (n - 1) / (g - 1)``
(a single node means a constant along that axis). Values between nodes are
trilinear; coordinates outside ``[0, n - 1]`` take the nearest edge value.
Microscopy backgrounds vary slowly (uneven illumination, out-of-focus haze),
so a few hundred numbers describe them far better than one offset.
"""

from __future__ import annotations

import numpy as np


def axis_weights(g: int, n: int, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation along one axis.

    Returns ``(i0, w1)``: for each coordinate, the lower node index (int64) and
    the weight of node ``i0 + 1`` (float64); node ``i0`` has ``1 - w1``.
    When ``g == 1`` every ``i0`` is 0 and every weight 0.
    """
    coords = np.asarray(coords, dtype=np.float64)
    if g == 1 or n <= 1:
        return np.zeros(coords.shape, np.int64), np.zeros(coords.shape, np.float64)
    t = np.clip(coords * ((g - 1) / (n - 1)), 0.0, g - 1)
    i0 = np.minimum(np.floor(t).astype(np.int64), g - 2)
    return i0, t - i0


def sample_points(field: np.ndarray, shape, points: np.ndarray) -> np.ndarray:
    """Field values (float32, model units) at (M, 3) voxel coordinates."""
    field = np.asarray(field, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    idx, wts = [], []
    for a in range(3):
        i0, w1 = axis_weights(field.shape[a], shape[a], points[:, a])
        i1 = np.minimum(i0 + 1, field.shape[a] - 1)
        idx.append((i0, i1))
        wts.append((1.0 - w1, w1))
    out = np.zeros(len(points), np.float64)
    for cz in (0, 1):
        for cy in (0, 1):
            for cx in (0, 1):
                w = wts[0][cz] * wts[1][cy] * wts[2][cx]
                out += w * field[idx[0][cz], idx[1][cy], idx[2][cx]]
    return out.astype(np.float32)


def sample_region(field: np.ndarray, shape, axis_coords) -> np.ndarray:
    """Field values (float32) on the grid spanned by three coordinate vectors (Z, Y, X)."""
    out = np.asarray(field, dtype=np.float64)
    for a in range(3):
        g = out.shape[a]
        i0, w1 = axis_weights(g, shape[a], axis_coords[a])
        i1 = np.minimum(i0 + 1, g - 1)
        lo = np.take(out, i0, axis=a)
        hi = np.take(out, i1, axis=a)
        wshape = [1, 1, 1]
        wshape[a] = -1
        w1 = w1.reshape(wshape)
        out = lo * (1.0 - w1) + hi * w1
    return out.astype(np.float32)
