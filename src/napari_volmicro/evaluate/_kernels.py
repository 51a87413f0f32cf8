"""Numba kernels shared by the dense and KNN evaluators.

Everything here works in voxel units, ZYX. A prepared Gaussian is one row of
a float64 ``(N, NPARAM)`` table (see ``prepare``): centre, the six distinct
entries of the precision matrix, amplitude, the half-widths of its 3-sigma
axis-aligned box and three covariance entries used to cut its ellipsoid by a
Z plane. The cutoff is inclusive: a Gaussian contributes where its
Mahalanobis distance squared ``d2 <= CUTOFF_D2`` (9).

Kernels use numpy's error model (no ZeroDivisionError checks in the hot
loops; the one division that could meet a zero is guarded). They are
compiled with ``cache=True`` (the compiled code is stored next to
this file, or under ``NUMBA_CACHE_DIR``), so a fresh process loads them
instead of compiling. Signatures are kept few: float64 geometry, a float64
accumulation buffer, and one specialisation per output dtype.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ..gaussians import CUTOFF_D2

# Columns of the prepared table.
CZ, CY, CX = 0, 1, 2
PZZ, PZY, PZX, PYY, PYX, PXX = 3, 4, 5, 6, 7, 8
AMP = 9
EZ, EY, EX = 10, 11, 12
SZZ, SZY, SYY = 13, 14, 15
NPARAM = 16

#: Recompute the exponential directly every this many voxels along a row
#: (bounds the drift of the multiplicative recurrence).
_RESYNC = 32


@njit(cache=True, error_model="numpy", inline="always")
def _rdr(r, d0, d1, d2, j, k):
    """Entry (j, k) of R diag(d) R^T."""
    return r[j, 0] * d0 * r[k, 0] + r[j, 1] * d1 * r[k, 1] + r[j, 2] * d2 * r[k, 2]


@njit(cache=True, error_model="numpy", nogil=True)
def prepare(centers, scales, quats, amps):
    """(N, NPARAM) float64 table from float32 parameters.

    Precision = R diag(s^-2) R^T and covariance = R diag(s^2) R^T with R from
    the normalised quaternion (w, a, b, c), exactly as ``GaussianVolume``
    computes them; box half-widths are 3 sqrt(diag(covariance)).
    """
    n = centers.shape[0]
    g = np.empty((n, NPARAM), np.float64)
    r = np.empty((3, 3), np.float64)
    for i in range(n):
        w = np.float64(quats[i, 0])
        a = np.float64(quats[i, 1])
        b = np.float64(quats[i, 2])
        c = np.float64(quats[i, 3])
        nrm = math.sqrt(w * w + a * a + b * b + c * c)
        w /= nrm
        a /= nrm
        b /= nrm
        c /= nrm
        r[0, 0] = 1 - 2 * (b * b + c * c)
        r[0, 1] = 2 * (a * b - c * w)
        r[0, 2] = 2 * (a * c + b * w)
        r[1, 0] = 2 * (a * b + c * w)
        r[1, 1] = 1 - 2 * (a * a + c * c)
        r[1, 2] = 2 * (b * c - a * w)
        r[2, 0] = 2 * (a * c - b * w)
        r[2, 1] = 2 * (b * c + a * w)
        r[2, 2] = 1 - 2 * (a * a + b * b)
        s0 = np.float64(scales[i, 0])
        s1 = np.float64(scales[i, 1])
        s2 = np.float64(scales[i, 2])
        v0, v1, v2 = s0 * s0, s1 * s1, s2 * s2
        p0, p1, p2 = 1.0 / v0, 1.0 / v1, 1.0 / v2
        for k in range(3):
            g[i, k] = centers[i, k]
        g[i, PZZ] = _rdr(r, p0, p1, p2, 0, 0)
        g[i, PZY] = _rdr(r, p0, p1, p2, 0, 1)
        g[i, PZX] = _rdr(r, p0, p1, p2, 0, 2)
        g[i, PYY] = _rdr(r, p0, p1, p2, 1, 1)
        g[i, PYX] = _rdr(r, p0, p1, p2, 1, 2)
        g[i, PXX] = _rdr(r, p0, p1, p2, 2, 2)
        g[i, AMP] = amps[i]
        czz = _rdr(r, v0, v1, v2, 0, 0)
        cyy = _rdr(r, v0, v1, v2, 1, 1)
        cxx = _rdr(r, v0, v1, v2, 2, 2)
        g[i, EZ] = 3.0 * math.sqrt(czz)
        g[i, EY] = 3.0 * math.sqrt(cyy)
        g[i, EX] = 3.0 * math.sqrt(cxx)
        g[i, SZZ] = czz
        g[i, SZY] = _rdr(r, v0, v1, v2, 0, 1)
        g[i, SYY] = cyy
    return g


@njit(cache=True, error_model="numpy", inline="always")
def mahalanobis2(g, i, dz, dy, dx):
    """Squared Mahalanobis distance of offset (dz, dy, dx) from Gaussian ``i``."""
    return (
        g[i, PZZ] * dz * dz
        + g[i, PYY] * dy * dy
        + g[i, PXX] * dx * dx
        + 2.0 * (g[i, PZY] * dz * dy + g[i, PZX] * dz * dx + g[i, PYX] * dy * dx)
    )


@njit(cache=True, error_model="numpy", nogil=True)
def bin_boxes(g, sel, origin, cell, ncell):
    """CSR lists of the Gaussians whose 3-sigma box meets each cell of a regular grid.

    ``sel``: indices (int64) of the Gaussians to bin, in the order they will
    appear in every list. Cell ``(a, b, c)`` covers coordinates
    ``origin + cell * [a, a + 1)`` (per axis, ZYX). A small margin makes the
    test conservative; callers apply the exact cutoff. Returns
    ``(ptr (ncells + 1,), idx)`` with cells in C order.
    """
    nz, ny, nx = ncell[0], ncell[1], ncell[2]
    lo = np.empty((len(sel), 3), np.int64)
    hi = np.empty((len(sel), 3), np.int64)
    counts = np.zeros(nz * ny * nx + 1, np.int64)
    for j in range(len(sel)):
        i = sel[j]
        empty = False
        for a in range(3):
            e = g[i, EZ + a]
            c = g[i, CZ + a]
            marg = 1e-9 * (abs(c) + e + 1.0)
            k0 = math.floor((c - e - marg - origin[a]) / cell[a])
            k1 = math.floor((c + e + marg - origin[a]) / cell[a])
            if k1 < 0 or k0 > ncell[a] - 1:
                empty = True
            lo[j, a] = max(k0, 0)
            hi[j, a] = min(k1, ncell[a] - 1)
        if empty:
            lo[j, 0] = 1
            hi[j, 0] = 0
            continue
        for a in range(lo[j, 0], hi[j, 0] + 1):
            for b in range(lo[j, 1], hi[j, 1] + 1):
                for c in range(lo[j, 2], hi[j, 2] + 1):
                    counts[(a * ny + b) * nx + c + 1] += 1
    ptr = np.cumsum(counts)
    fill = ptr[:-1].copy()
    idx = np.empty(ptr[-1], np.int64)
    for j in range(len(sel)):
        for a in range(lo[j, 0], hi[j, 0] + 1):
            for b in range(lo[j, 1], hi[j, 1] + 1):
                for c in range(lo[j, 2], hi[j, 2] + 1):
                    cid = (a * ny + b) * nx + c
                    idx[fill[cid]] = sel[j]
                    fill[cid] += 1
    return ptr, idx


@njit(cache=True, error_model="numpy", nogil=True)
def select_in_box(g, lo, hi):
    """Indices of the Gaussians whose 3-sigma box meets the box ``[lo, hi]`` (coords, ZYX)."""
    n = g.shape[0]
    keep = np.empty(n, np.int64)
    m = 0
    for i in range(n):
        ok = True
        for a in range(3):
            c = g[i, CZ + a]
            e = g[i, EZ + a] + 1e-9 * (abs(c) + g[i, EZ + a] + 1.0)
            if c + e < lo[a] or c - e > hi[a]:
                ok = False
        if ok:
            keep[m] = i
            m += 1
    return keep[:m]


# -- background field and output conversion ------------------------------------


@njit(cache=True, error_model="numpy", inline="always")
def _lerp_index(i0, w1, n):
    """Upper node of a linear interpolation (clamped to the last node)."""
    i1 = i0 + 1
    if i1 > n - 1:
        i1 = n - 1
    return i1


@njit(cache=True, error_model="numpy", nogil=True)
def field_plane(field, iz0, wz):
    """The background field interpolated to one Z coordinate: (gy, gx) float64."""
    gz = field.shape[0]
    iz1 = _lerp_index(iz0, wz, gz)
    return field[iz0] * (1.0 - wz) + field[iz1] * wz


@njit(cache=True, error_model="numpy", inline="always")
def store(out, iz, iy, ix, value, offset, scale, is_int, lo, hi):
    """Write ``offset + scale * value`` to ``out`` (rounded half-even and clipped if integer)."""
    v = offset + scale * value
    if is_int:
        v = np.rint(v)
        if v < lo:
            v = lo
        elif v > hi:
            v = hi
    out[iz, iy, ix] = v


@njit(cache=True, error_model="numpy", nogil=True)
def _finish_block(buf, z0, y0, x0, field, fz0, fzw, fy0, fyw, fx0, fxw, offset, scale, is_int, lo, hi, out):
    """Write block ``buf`` (model sums) at output offset (z0, y0, x0), adding the background and converting."""
    nbz, nby, nbx = buf.shape
    has_bg = field.shape[0] > 0
    for lz in range(nbz):
        iz = z0 + lz
        if has_bg:
            fp = field_plane(field, fz0[iz], fzw[iz])
        else:
            fp = np.zeros((1, 1), np.float64)
        gy = fp.shape[0]
        gx = fp.shape[1]
        for ly in range(nby):
            iy = y0 + ly
            for lx in range(nbx):
                ix = x0 + lx
                v = buf[lz, ly, lx]
                if has_bg:
                    ya = fy0[iy]
                    yb = _lerp_index(ya, fyw[iy], gy)
                    wy = fyw[iy]
                    xa = fx0[ix]
                    xb = _lerp_index(xa, fxw[ix], gx)
                    wx = fxw[ix]
                    b0 = fp[ya, xa] * (1.0 - wy) + fp[yb, xa] * wy
                    b1 = fp[ya, xb] * (1.0 - wy) + fp[yb, xb] * wy
                    v += b0 * (1.0 - wx) + b1 * wx
                store(out, iz, iy, ix, v, offset, scale, is_int, lo, hi)


# -- dense decode -------------------------------------------------------------------


@njit(cache=True, error_model="numpy", nogil=True)
def plane_lists(g, sel, start, step, nz):
    """CSR lists of Gaussians (from ``sel``, order kept) whose 3-sigma box meets each output Z plane."""
    counts = np.zeros(nz + 1, np.int64)
    lo = np.empty(len(sel), np.int64)
    hi = np.empty(len(sel), np.int64)
    for j in range(len(sel)):
        i = sel[j]
        c = g[i, CZ]
        e = g[i, EZ] + 1e-9 * (abs(c) + g[i, EZ] + 1.0)
        k0 = math.ceil((c - e - start) / step)
        k1 = math.floor((c + e - start) / step)
        k0 = max(k0, 0)
        k1 = min(k1, nz - 1)
        lo[j] = k0
        hi[j] = k1
        for k in range(k0, k1 + 1):
            counts[k + 1] += 1
    ptr = np.cumsum(counts)
    fill = ptr[:-1].copy()
    idx = np.empty(ptr[-1], np.int64)
    for j in range(len(sel)):
        for k in range(lo[j], hi[j] + 1):
            idx[fill[k]] = sel[j]
            fill[k] += 1
    return ptr, idx


@njit(cache=True, error_model="numpy", inline="always")
def _row_d2(cq, bq, aq, dx):
    return cq + dx * (bq + aq * dx)


@njit(cache=True, error_model="numpy", inline="always")
def row_span(aq, bq, cq, cx, sx, stx, x_lo, x_hi):
    """Exact index span ``(ia, ib)`` of one row where d2 <= 9 (``ia > ib``: empty).

    Along the row, d2(dx) = aq dx^2 + bq dx + cq with dx = sx + stx * ix - cx.
    The roots give the span; its ends are then checked against the direct d2
    so rounding in the roots cannot add or drop a voxel.
    """
    disc = bq * bq - 4.0 * aq * (cq - CUTOFF_D2)
    if disc < 0.0:
        return 1, 0
    sq = math.sqrt(disc)
    inv = 0.5 / aq
    ia = math.ceil((cx + (-bq - sq) * inv - sx) / stx)
    ib = math.floor((cx + (-bq + sq) * inv - sx) / stx)
    if ia < x_lo:
        ia = x_lo
    if ib > x_hi:
        ib = x_hi
    if ia > ib:
        return 1, 0
    while ia <= ib and _row_d2(cq, bq, aq, sx + ia * stx - cx) > CUTOFF_D2:
        ia += 1
    while ia - 1 >= x_lo and _row_d2(cq, bq, aq, sx + (ia - 1) * stx - cx) <= CUTOFF_D2:
        ia -= 1
    while ib >= ia and _row_d2(cq, bq, aq, sx + ib * stx - cx) > CUTOFF_D2:
        ib -= 1
    while ib + 1 <= x_hi and _row_d2(cq, bq, aq, sx + (ib + 1) * stx - cx) <= CUTOFF_D2:
        ib += 1
    return ia, ib


@njit(cache=True, error_model="numpy", nogil=True)
def direct_row(buf, iy, ia, ib, amp, cx, aq, bq, cq, q, sx, stx):
    """Add one Gaussian to ``buf[iy, ia..ib]``, exp recomputed every ``_RESYNC`` voxels."""
    h = stx
    ah2 = aq * h * h
    i0 = ia
    while i0 <= ib:
        i1 = min(i0 + _RESYNC, ib + 1)
        dx = sx + i0 * h - cx
        v = amp * math.exp(-0.5 * _row_d2(cq, bq, aq, dx))
        r = math.exp(-0.5 * (h * (2.0 * aq * dx + bq) + ah2))
        for ix in range(i0, i1):
            buf[iy, ix] += v
            v *= r
            r *= q
        i0 = i1


@njit(cache=True, error_model="numpy", inline="always")
def walk_row(buf, iy, ia, ib, anchor, e, r, q):
    """Add one Gaussian to ``buf[iy, ia..ib]`` from its value ``e`` and next-column ratio ``r`` at ``anchor``.

    Right of the anchor v(x + 1) = v(x) r, r <- r q; left of it
    v(x - 1) = v(x) s with s = q / r, s <- s q (exact identities of a Gaussian
    sampled on a line; q = exp(-aq stx^2)).
    """
    if anchor <= ia:
        v = e
        rr = r
        for _ in range(anchor, ia):
            v *= rr
            rr *= q
        for ix in range(ia, ib + 1):
            buf[iy, ix] += v
            v *= rr
            rr *= q
    elif anchor > ib:
        v = e
        s = q / r
        for _ in range(ib, anchor):
            v *= s
            s *= q
        for ix in range(ib, ia - 1, -1):
            buf[iy, ix] += v
            v *= s
            s *= q
    else:
        v = e
        rr = r
        for ix in range(anchor, ib + 1):
            buf[iy, ix] += v
            v *= rr
            rr *= q
        v = e
        s = q / r
        for ix in range(anchor - 1, ia - 1, -1):
            v *= s
            s *= q
            buf[iy, ix] += v


#: Rows between direct recomputations of the anchor recurrences.
_ROW_RESYNC = 16
#: Above this d2 at the anchor column, a row is evaluated directly (exp(-d2/2) nears underflow).
_ANCHOR_MAX_D2 = 1200.0


@njit(cache=True, error_model="numpy", nogil=True)
def splat_plane(buf, i, g, zc, sy, sty, sx, stx, y_lo, y_hi, x_lo, x_hi):
    """Add Gaussian ``i`` to the plane buffer ``buf`` (ny, nx) at Z coordinate ``zc``.

    Rows are limited to the exact Y extent of the ellipse cut by the plane
    (plus one row each side, rejected by the row test if empty) and to
    ``y_lo..y_hi``; columns to ``x_lo..x_hi``. Each row's exact span comes
    from ``row_span``. Values are carried from row to row at one fixed
    anchor column by multiplicative recurrences (no exp per row; recomputed
    directly every ``_ROW_RESYNC`` rows) and walked along the row from there;
    rows whose span lies far from the anchor, or where the value at the
    anchor is too small to carry, are evaluated directly.
    """
    dz = zc - g[i, CZ]
    szz = g[i, SZZ]
    r2 = CUTOFF_D2 - dz * dz / szz
    if r2 < -1e-9:
        return
    if r2 < 0.0:
        r2 = 0.0
    cyy = g[i, SYY] - g[i, SZY] * g[i, SZY] / szz
    if cyy < 0.0:
        cyy = 0.0
    half = math.sqrt(r2 * cyy)
    cy = g[i, CY]
    ymid = cy + g[i, SZY] / szz * dz
    ja = math.ceil((ymid - half - sy) / sty) - 1
    jb = math.floor((ymid + half - sy) / sty) + 1
    if ja < y_lo:
        ja = y_lo
    if jb > y_hi:
        jb = y_hi
    if ja > jb:
        return
    amp = g[i, AMP]
    cx = g[i, CX]
    aq = g[i, PXX]
    q = math.exp(-aq * stx * stx)
    # Row coefficients: bq = b0 + b1 dy, cq = c0 + c1 dy + c2 dy^2.
    b0 = 2.0 * g[i, PZX] * dz
    b1 = 2.0 * g[i, PYX]
    c0 = g[i, PZZ] * dz * dz
    c1 = 2.0 * g[i, PZY] * dz
    c2 = g[i, PYY]
    # Anchor: the column nearest the row minimum at the ellipse's middle row.
    dmid = ymid - cy
    anchor = round((cx - (b0 + b1 * dmid) / (2.0 * aq) - sx) / stx)
    if anchor < x_lo:
        anchor = x_lo
    if anchor > x_hi:
        anchor = x_hi
    da = sx + anchor * stx - cx
    # At the anchor, d2(dy) = alpha + beta dy + c2 dy^2.
    alpha = c0 + da * (b0 + aq * da)
    beta = c1 + b1 * da
    qy = math.exp(-c2 * sty * sty)
    rho = math.exp(-0.5 * stx * b1 * sty)
    # Carry values between rows only when the per-row factors are well inside
    # float64 range (a Gaussian much thinner than the row step is evaluated directly).
    period = _ROW_RESYNC if (c2 * sty * sty < 200.0 and abs(stx * b1 * sty) < 400.0) else 1
    walkable = aq * stx * stx < 200.0
    e = 0.0
    r = 0.0
    y = 0.0
    valid = 0  # rows left before the anchor state must be recomputed
    for iy in range(ja, jb + 1):
        dy = sy + iy * sty - cy
        bq = b0 + b1 * dy
        cq = c0 + dy * (c1 + c2 * dy)
        d2a = alpha + dy * (beta + c2 * dy)
        if d2a > _ANCHOR_MAX_D2:
            valid = 0
        elif valid == 0:
            e = amp * math.exp(-0.5 * d2a)
            r = math.exp(-0.5 * (stx * (2.0 * aq * da + bq) + aq * stx * stx))
            y = math.exp(-0.5 * sty * (beta + c2 * (2.0 * dy + sty)))
            valid = period
        ia, ib = row_span(aq, bq, cq, cx, sx, stx, x_lo, x_hi)
        if ia <= ib:
            far = ia - anchor if anchor < ia else anchor - ib
            if valid > 0 and walkable and r > 0.0 and far <= 2 * (ib - ia) + 8:
                walk_row(buf, iy, ia, ib, anchor, e, r, q)
            else:
                direct_row(buf, iy, ia, ib, amp, cx, aq, bq, cq, q, sx, stx)
        if valid > 0:
            e *= y
            y *= qy
            r *= rho
            valid -= 1


@njit(cache=True, error_model="numpy", parallel=True, nogil=True)
def dense_decode(g, ptr, idx, start, step, field, fz0, fzw, fy0, fyw, fx0, fxw, offset, scale, is_int, lo, hi, out, nthreads):
    """Gather every Gaussian's 3-sigma footprint onto ``out`` (nz, ny, nx).

    Output voxel ``(iz, iy, ix)`` is at coordinate ``start + step * (iz, iy, ix)``.
    ``ptr, idx``: per-plane Gaussian lists (``plane_lists``). ``field``: the
    background grid (float64; shape (0, 0, 0) for none) with per-axis
    interpolation nodes/weights ``f?0, f?w`` for the output coordinates.
    Each of ``nthreads`` chunks owns a set of Z planes (interleaved, for balance), sums into a
    float64 plane buffer, adds the background and writes
    ``offset + scale * value`` converted to ``out``'s dtype.
    """
    nz, ny, nx = out.shape
    sz, sy, sx = float(start[0]), float(start[1]), float(start[2])
    stz, sty, stx = float(step[0]), float(step[1]), float(step[2])
    nchunks = max(1, min(nthreads, nz))
    for c in prange(nchunks):
        buf = np.empty((1, ny, nx), np.float64)
        for iz in range(c, nz, nchunks):
            buf[:] = 0.0
            zc = sz + iz * stz
            plane = buf[0]
            for j in range(ptr[iz], ptr[iz + 1]):
                splat_plane(plane, idx[j], g, zc, sy, sty, sx, stx, 0, ny - 1, 0, nx - 1)
            _finish_block(buf, iz, 0, 0, field, fz0, fzw, fy0, fyw, fx0, fxw, offset, scale, is_int, lo, hi, out)


# -- points ------------------------------------------------------------------------


@njit(cache=True, error_model="numpy", parallel=True, nogil=True)
def points_exact(g, points, origin, cell, ncell, ptr, idx):
    """Exact 3-sigma sum at (M, 3) points from cell lists (``bin_boxes``); float64 (M,)."""
    m = points.shape[0]
    out = np.zeros(m, np.float64)
    ny, nx = ncell[1], ncell[2]
    for p in prange(m):
        k = np.empty(3, np.int64)
        inside = True
        for a in range(3):
            t = math.floor((points[p, a] - origin[a]) / cell[a])
            if t < 0 or t > ncell[a] - 1:
                inside = False
            k[a] = t
        if not inside:
            continue
        cid = (k[0] * ny + k[1]) * nx + k[2]
        s = 0.0
        for j in range(ptr[cid], ptr[cid + 1]):
            i = idx[j]
            d2 = mahalanobis2(g, i, points[p, 0] - g[i, CZ], points[p, 1] - g[i, CY], points[p, 2] - g[i, CX])
            if d2 <= CUTOFF_D2:
                s += g[i, AMP] * math.exp(-0.5 * d2)
        out[p] = s
    return out


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
        inside = True
        cid = 0
        for a in range(3):
            t = math.floor((points[p, a] - origin[a]) / cell[a])
            if t < 0 or t > ncell[a] - 1:
                inside = False
            cid = cid * ncell[a] + t
        s = 0.0
        if inside:
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
    """K-nearest 3-sigma sum on the listed tiles of ``out`` (nz, ny, nx), converted like ``dense_decode``.

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
        for j in range(ptr[q], ptr[q + 1]):
            i = idx[j]
            for a in range(3):
                cg[a] = g[i, CZ + a]
            dmin, dmax = _box_dist(cg, blo, bhi)
            if dmax < r_lo * (1.0 - 1e-9) - hh:
                for iz in range(z0, z1):
                    splat_plane(
                        buf[iz - z0], i, g, blo[0] + (iz - z0) * st[0],
                        blo[1], st[1], blo[2], st[2], 0, y1 - y0 - 1, 0, x1 - x0 - 1,
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
