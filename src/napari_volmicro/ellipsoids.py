"""Gaussians as ellipsoids: one merged triangle mesh (for a napari Surface layer).

Each selected Gaussian becomes a unit icosphere scaled by ``sigma * scales``
along its principal axes, rotated by its quaternion and moved to its centre.
The meshes are concatenated into one ``(vertices, faces, values)`` triple, the
form napari's Surface layer takes. Numpy only (no Qt, no napari).

Units: vertices are ZYX voxel coordinates (the model's own units) unless
``physical=True``, in which case they are multiplied by the model's spacing.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .errors import InputError
from .gaussians import GaussianVolume
from .region import normalize_region

#: Default ellipsoid size: the surface where the Gaussian is exp(-2) of its peak.
DEFAULT_SIGMA = 2.0


@lru_cache(maxsize=8)
def icosphere(subdivisions: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Unit sphere mesh: (V, 3) float64 vertices on the unit sphere, (F, 3) int32 faces.

    ``subdivisions`` = 0 gives the icosahedron (12 vertices, 20 faces); each
    subdivision splits every triangle in four (1: 42/80, 2: 162/320).
    Returned arrays are read-only (cached).
    """
    if isinstance(subdivisions, bool) or not isinstance(subdivisions, (int, np.integer)) or not (
        0 <= subdivisions <= 5
    ):
        raise InputError(f"icosphere subdivisions must be an integer 0..5, got {subdivisions!r}")
    t = (1.0 + 5.0**0.5) / 2.0
    verts = [
        (-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0),
        (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
        (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1),
    ]
    faces = [
        (0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11),
        (1, 5, 9), (5, 11, 4), (11, 10, 2), (10, 7, 6), (7, 1, 8),
        (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9),
        (4, 9, 5), (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1),
    ]
    v = [np.asarray(p, np.float64) / np.linalg.norm(p) for p in verts]
    f = faces
    for _ in range(int(subdivisions)):
        cache: dict[tuple[int, int], int] = {}

        def midpoint(i, j, v=v, cache=cache):
            key = (i, j) if i < j else (j, i)
            if key not in cache:
                m = v[i] + v[j]
                v.append(m / np.linalg.norm(m))
                cache[key] = len(v) - 1
            return cache[key]

        new = []
        for a, b, c in f:
            ab, bc, ca = midpoint(a, b), midpoint(b, c), midpoint(c, a)
            new += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        f = new
    vv = np.asarray(v, np.float64)
    ff = np.asarray(f, np.int32)
    vv.flags.writeable = False
    ff.flags.writeable = False
    return vv, ff


def select_gaussians(gv: GaussianVolume, region=None, top_n: int | None = None) -> np.ndarray:
    """Indices of the Gaussians to draw, brightest first.

    region: None or three slices (ZYX voxel indices, as for ``decode``); keeps
    the Gaussians whose centre lies inside the region's box (the step is
    ignored). top_n: keep at most this many, by amplitude (largest first).
    """
    idx = np.arange(gv.n_gaussians)
    if region is not None:
        grid = normalize_region(region, gv.shape)
        lo = np.asarray(grid.start, np.float64) - 0.5
        hi = np.asarray(grid.stop, np.float64) - 0.5
        c = gv.centers.astype(np.float64)
        inside = np.all((c >= lo) & (c < hi), axis=1)
        idx = idx[inside]
    order = np.argsort(-gv.amplitudes[idx], kind="stable")
    idx = idx[order]
    if top_n is not None:
        if isinstance(top_n, bool) or not isinstance(top_n, (int, np.integer)) or top_n < 0:
            raise InputError(f"top_n must be a non-negative integer, got {top_n!r}")
        idx = idx[: int(top_n)]
    return idx


def ellipsoid_mesh(
    gv: GaussianVolume,
    index=None,
    *,
    sigma: float = DEFAULT_SIGMA,
    subdivisions: int = 1,
    physical: bool = False,
    values: str = "amplitude",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One merged mesh of the ellipsoids of the Gaussians selected by ``index``.

    index: None (all), a boolean mask or integer indices (e.g. from
    ``select_gaussians``). sigma: the ellipsoid's semi-axes are
    ``sigma * scales[i]`` voxels along Gaussian ``i``'s principal axes.
    physical: multiply vertices by ``gv.spacing`` (ZYX) so they are in physical
    units; otherwise voxel units. values: per-vertex value, ``"amplitude"``
    (model units) or ``"original"`` (amplitude in the original intensity units,
    ``mapping.scale * amplitude``).

    Returns ``(vertices (N*V, 3) float32 ZYX, faces (N*F, 3) int32, values (N*V,) float32)``.
    """
    if not (np.isfinite(sigma) and sigma > 0):
        raise InputError(f"sigma (ellipsoid size in standard deviations) must be > 0, got {sigma!r}")
    if values not in ("amplitude", "original"):
        raise InputError(f"values must be 'amplitude' or 'original', got {values!r}")
    sel = np.arange(gv.n_gaussians) if index is None else np.arange(gv.n_gaussians)[index]
    sphere, sphere_faces = icosphere(subdivisions)
    n, nv = len(sel), len(sphere)
    if n == 0:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), np.zeros(0, np.float32)
    rot = gv.subset(sel).rotations()  # (n, 3, 3), columns = principal axes
    axes = rot * (sigma * gv.scales[sel].astype(np.float64))[:, None, :]  # column j scaled by s_j
    verts = np.einsum("nij,vj->nvi", axes, sphere) + gv.centers[sel].astype(np.float64)[:, None, :]
    if physical:
        verts = verts * np.asarray(gv.spacing, np.float64)
    faces = sphere_faces[None, :, :] + (np.arange(n, dtype=np.int64) * nv)[:, None, None]
    if faces.max() > np.iinfo(np.int32).max:
        raise InputError(f"too many ellipsoids for one mesh ({n}); select fewer")
    amp = gv.amplitudes[sel].astype(np.float64)
    if values == "original":
        amp = amp * gv.mapping.scale
    vals = np.repeat(amp, nv)
    return (
        verts.reshape(-1, 3).astype(np.float32),
        faces.reshape(-1, 3).astype(np.int32),
        vals.astype(np.float32),
    )
