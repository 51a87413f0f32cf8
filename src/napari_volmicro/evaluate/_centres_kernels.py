"""Numba kernels of the K-nearest-centres evaluator (``knn_centres.py``, the paper's rule).

Voxel units, ZYX, the prepared table of ``_kernels.prepare``; compiled with
``cache=True`` like the shared kernels they build on (``splat_plane``,
``_finish_block``, ``mahalanobis2``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ..gaussians import CUTOFF_D2
from ._kernels import AMP, CX, CY, CZ, EZ, _finish_block, cell_of, mahalanobis2, splat_plane

# -- K nearest centres --------------------------------------------------------------
#
# A Gaussian g counts at a voxel v when d2(g, v) <= 9 AND g is among the K
# centres nearest to v (Euclidean, voxel units; ties broken by the lower
# Gaussian index). For a query point t (a tile centre, or the point itself)
# with a lower bound ``rlo`` and an upper bound ``rup`` of its K-th nearest
# centre distance, and a voxel v at distance ``rv`` from t:
#   |g - v| < rlo - rv  -> g is certainly among v's K nearest;
#   |g - v| > rup + rv  -> certainly not;
#   otherwise its rank is counted among the candidates (every centre within
#   rup + 2 h of t, h = the tile's half-diagonal), which must be supplied.


@njit(cache=True, error_model="numpy", inline="always")
def _dist2(g, i, z, y, x):
    dz = z - g[i, CZ]
    dy = y - g[i, CY]
    dx = x - g[i, CX]
    return dz * dz + dy * dy + dx * dx


@njit(cache=True, error_model="numpy", inline="always")
def _knn_member(g, i, z, y, x, e2, rv, rlo, rup, cstart, cend, cidx, cdist, q, k):
    """1 if Gaussian ``i`` is among the K nearest centres of (z, y, x), 0 if not, -1 if undecidable without candidates.

    ``cidx[cstart[q]:cend[q]]``: query ``q``'s candidates sorted by ``cdist``, their
    distance to the query point, which lies ``rv`` from (z, y, x). A candidate with
    ``cdist + rv`` below ``e = sqrt(e2)`` is certainly nearer than ``i`` and one with
    ``cdist - rv`` above it certainly farther; only those in between are compared.
    """
    # Both shortcuts are widened by a relative 1e-9 so rounding cannot decide
    # a boundary case (e.g. the K-th neighbour itself at exactly ``rup``).
    t = rlo * (1.0 - 1e-9) - rv
    if t > 0.0 and e2 < t * t:
        return 1
    t = (rup + rv) * (1.0 + 1e-9) + 1e-12
    if e2 > t * t:
        return 0
    if cstart[q] < 0:
        return -1
    e = math.sqrt(e2)
    slack = 1e-9 * (e + rv) + 1e-12
    # candidates [c0, j0) are certainly nearer: binary search for the first that is not
    c0, j0, hi = cstart[q], cstart[q], cend[q]
    near = e - rv - slack
    while j0 < hi:
        mid = (j0 + hi) // 2
        if cdist[mid] < near:
            j0 = mid + 1
        else:
            hi = mid
    rank = j0 - c0
    if rank >= k:
        return 0
    far = e + rv + slack
    for j in range(j0, cend[q]):
        if cdist[j] > far:
            break
        c = cidx[j]
        d2 = _dist2(g, c, z, y, x)
        if d2 < e2 or (d2 == e2 and c < i):
            rank += 1
            if rank >= k:
                return 0
    return 1


@njit(cache=True, error_model="numpy", parallel=True, nogil=True)
def keep_within(lims, d, ids, keep2, sub, centres, queries):
    """The pairs of a faiss range search that lie within each query's own limit, sorted by exact distance.

    lims, d, ids: faiss's result for ``queries`` (M, 3 float64, voxels) against the
    centres ``sub`` (global indices into ``centres``, (N, 3) float64); query q's
    hits are ``[lims[q], lims[q+1])``, ``d`` their float32 squared distances and
    ``ids`` indices into ``sub``. A hit is kept when ``d <= keep2[q]``. Returns
    (counts (M,), cidx, cdist): query q's kept centres are the next ``counts[q]``
    entries of ``cidx`` (global indices), nearest first by ``cdist`` (float64 distances).
    One kernel, so a caller in a GUI gives up Python's global lock once, not per step.
    """
    m = len(lims) - 1
    counts = np.zeros(m, np.int64)
    for q in range(m):
        for j in range(np.int64(lims[q]), np.int64(lims[q + 1])):
            if d[j] <= keep2[q]:
                counts[q] += 1
    starts = np.zeros(m, np.int64)
    for q in range(1, m):
        starts[q] = starts[q - 1] + counts[q - 1]
    total = starts[m - 1] + counts[m - 1] if m else 0
    cidx = np.empty(total, np.int64)
    cdist = np.empty(total, np.float64)
    for q in prange(m):
        pos = starts[q]
        for j in range(np.int64(lims[q]), np.int64(lims[q + 1])):
            if d[j] <= keep2[q]:
                c = sub[ids[j]]
                dz = centres[c, 0] - queries[q, 0]
                dy = centres[c, 1] - queries[q, 1]
                dx = centres[c, 2] - queries[q, 2]
                cidx[pos] = c
                cdist[pos] = math.sqrt(dz * dz + dy * dy + dx * dx)
                pos += 1
        a, b = starts[q], pos
        if b - a > 1:
            o = np.argsort(cdist[a:b])
            cidx[a:b] = cidx[a:b][o]
            cdist[a:b] = cdist[a:b][o]
    return counts, cidx, cdist


@njit(cache=True, error_model="numpy", nogil=True)
def knn_upper_radius(g, queries, nn):
    """Exact float64 distance from each query to the farthest of its listed neighbours (rows of ``nn``)."""
    m = queries.shape[0]
    out = np.zeros(m, np.float64)
    for p in range(m):
        best = 0.0
        for j in range(nn.shape[1]):
            i = nn[p, j]
            if i < 0:
                continue
            d2 = _dist2(g, i, queries[p, 0], queries[p, 1], queries[p, 2])
            if d2 > best:
                best = d2
        out[p] = math.sqrt(best)
    return out


@njit(cache=True, error_model="numpy", parallel=True, nogil=True)
def knn_points(g, points, which, origin, cell, ncell, ptr, idx, rlo, rup, cstart, cend, cidx, cdist, k, out, undecided):
    """K-nearest 3-sigma sum at ``points[which]`` into ``out`` (float64, model units).

    Coverage comes from the cell lists (``bin_boxes``); ``rlo``/``rup``: bounds
    of each point's K-th neighbour distance; ``cidx[cstart[p]:cend[p]]`` (sorted by
    their distance ``cdist`` to the point): the point's
    candidates (``cstart[p] < 0``: none). Points that need candidates they
    lack get ``undecided[p] = True`` (their value is then incomplete).
    """
    for jj in prange(len(which)):
        p = which[jj]
        z, y, x = points[p, 0], points[p, 1], points[p, 2]
        cid = cell_of(points, p, origin, cell, ncell)
        s = 0.0
        if cid >= 0:
            for j in range(ptr[cid], ptr[cid + 1]):
                i = idx[j]
                d2 = mahalanobis2(g, i, z - g[i, CZ], y - g[i, CY], x - g[i, CX])
                if d2 > CUTOFF_D2:
                    continue
                mem = _knn_member(
                    g, i, z, y, x, _dist2(g, i, z, y, x), 0.0, rlo[p], rup[p], cstart, cend, cidx, cdist, p, k
                )
                if mem < 0:
                    undecided[p] = True
                elif mem == 1:
                    s += g[i, AMP] * math.exp(-0.5 * d2)
        out[p] = s
    return out


@njit(cache=True, error_model="numpy", nogil=True)
def _box_dist(c, lo, hi):
    """Min and max Euclidean distance from point ``c`` (3,) to the box [lo, hi]."""
    dmin = 0.0
    dmax = 0.0
    for a in range(3):
        if c[a] < lo[a]:
            t = lo[a] - c[a]
        elif c[a] > hi[a]:
            t = c[a] - hi[a]
        else:
            t = 0.0
        dmin += t * t
        u = max(abs(c[a] - lo[a]), abs(c[a] - hi[a]))
        dmax += u * u
    return math.sqrt(dmin), math.sqrt(dmax)


@njit(cache=True, error_model="numpy", parallel=True, nogil=True)
def knn_tiles(
    g, tiles, tsize, start, step, ptr, idx, rlo, rup, cstart, cend, cidx, cdist, k,
    field, fz0, fzw, fy0, fyw, fx0, fxw, offset, scale, is_int, lo, hi, out, undecided,
):
    """K-nearest 3-sigma sum on the listed tiles of ``out`` (nz, ny, nx), converted like ``splat_decode``.

    Tile ``q`` (C order over the tile grid) covers output indices
    ``tsize * (tz, ty, tx) + [0, tsize)`` (cut by the region's end);
    ``ptr``/``idx``: the Gaussians whose 3-sigma box meets each tile
    (``bin_boxes``); ``rlo``/``rup``: bounds of the K-th neighbour distance of
    each tile centre; ``cidx[cstart[q]:cend[q]]``: the tile's candidates, sorted by
    ``cdist`` (their distance to the tile centre)
    (``cstart[q] < 0``: none). Whole-tile decisions are taken from box distances; only Gaussians
    near the K-th neighbour shell are tested voxel by voxel. Tiles that need
    candidates they lack are flagged in ``undecided`` (their output is then
    incomplete and must be recomputed).
    """
    nz, ny, nx = out.shape
    tny = (ny + tsize - 1) // tsize
    tnx = (nx + tsize - 1) // tsize
    st = np.empty(3, np.float64)
    for a in range(3):
        st[a] = step[a]
    for jj in prange(len(tiles)):
        q = tiles[jj]
        tz = q // (tny * tnx)
        ty = (q // tnx) % tny
        tx = q % tnx
        z0, y0, x0 = tz * tsize, ty * tsize, tx * tsize
        z1, y1, x1 = min(z0 + tsize, nz), min(y0 + tsize, ny), min(x0 + tsize, nx)
        blo = np.empty(3, np.float64)
        bhi = np.empty(3, np.float64)
        blo[0] = start[0] + z0 * st[0]
        blo[1] = start[1] + y0 * st[1]
        blo[2] = start[2] + x0 * st[2]
        bhi[0] = start[0] + (z1 - 1) * st[0]
        bhi[1] = start[1] + (y1 - 1) * st[1]
        bhi[2] = start[2] + (x1 - 1) * st[2]
        t = 0.5 * (blo + bhi)
        hh = math.sqrt(((bhi - blo) ** 2).sum()) * 0.5
        buf = np.zeros((z1 - z0, y1 - y0, x1 - x0), np.float64)
        r_lo = rlo[q]
        r_up = rup[q]
        cg = np.empty(3, np.float64)
        no_count = np.zeros((0, 0), np.int32)
        for j in range(ptr[q], ptr[q + 1]):
            i = idx[j]
            for a in range(3):
                cg[a] = g[i, CZ + a]
            dmin, dmax = _box_dist(cg, blo, bhi)
            if dmax < r_lo * (1.0 - 1e-9) - hh:
                for iz in range(z0, z1):
                    splat_plane(
                        buf[iz - z0], i, g, blo[0] + (iz - z0) * st[0],
                        blo[1], st[1], blo[2], st[2], 0, y1 - y0 - 1, 0, x1 - x0 - 1, no_count,
                    )
                continue
            if dmin > (r_up + hh) * (1.0 + 1e-9) + 1e-12:
                continue
            # Voxel by voxel, within the Gaussian's box.
            ka = np.empty(3, np.int64)
            kb = np.empty(3, np.int64)
            for a in range(3):
                ka[a] = max(math.ceil((cg[a] - g[i, EZ + a] - blo[a]) / st[a] - 1e-6), 0)
                kb[a] = min(math.floor((cg[a] + g[i, EZ + a] - blo[a]) / st[a] + 1e-6), buf.shape[a] - 1)
            for lz in range(ka[0], kb[0] + 1):
                z = blo[0] + lz * st[0]
                for ly in range(ka[1], kb[1] + 1):
                    y = blo[1] + ly * st[1]
                    for lx in range(ka[2], kb[2] + 1):
                        x = blo[2] + lx * st[2]
                        d2 = mahalanobis2(g, i, z - cg[0], y - cg[1], x - cg[2])
                        if d2 > CUTOFF_D2:
                            continue
                        rv = math.sqrt((z - t[0]) ** 2 + (y - t[1]) ** 2 + (x - t[2]) ** 2)
                        mem = _knn_member(
                            g, i, z, y, x, _dist2(g, i, z, y, x), rv, r_lo, r_up, cstart, cend, cidx, cdist, q, k
                        )
                        if mem < 0:
                            undecided[q] = True
                        elif mem == 1:
                            buf[lz, ly, lx] += g[i, AMP] * math.exp(-0.5 * d2)
        _finish_block(buf, z0, y0, x0, field, fz0, fzw, fy0, fyw, fx0, fxw, offset, scale, is_int, lo, hi, out)
