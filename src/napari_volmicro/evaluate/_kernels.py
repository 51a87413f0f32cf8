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
def boxes(g):
    """(N, 6) float64: each Gaussian's 3-sigma box ``lo_z, lo_y, lo_x, hi_z, hi_y, hi_x``, widened by a
    relative 1e-9 so a box test is conservative (callers apply the exact cutoff)."""
    n = g.shape[0]
    out = np.empty((n, 6), np.float64)
    for i in range(n):
        for a in range(3):
            c = g[i, CZ + a]
            e = g[i, EZ + a] + 1e-9 * (abs(c) + g[i, EZ + a] + 1.0)
            out[i, a] = c - e
            out[i, 3 + a] = c + e
    return out


@njit(cache=True, error_model="numpy", nogil=True)
def select_in_box(box, lo, hi):
    """Indices of the Gaussians whose box (rows of ``boxes``) meets the box ``[lo, hi]`` (coords, ZYX)."""
    n = box.shape[0]
    keep = np.empty(n, np.int64)
    m = 0
    for i in range(n):
        if (box[i, 3] >= lo[0] and box[i, 0] <= hi[0] and box[i, 4] >= lo[1] and box[i, 1] <= hi[1]
                and box[i, 5] >= lo[2] and box[i, 2] <= hi[2]):
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
    """Write block ``buf`` (model sums) at output offset (z0, y0, x0), adding the background and converting.

    Per plane the background field is interpolated to the plane's Z and then to
    the block's X coordinates (``gy`` rows of nodes); each voxel then only
    interpolates two of those rows along Y (contiguous, vectorisable).
    """
    nbz, nby, nbx = buf.shape
    has_bg = field.shape[0] > 0
    gy = field.shape[1] if has_bg else 1
    gx = field.shape[2] if has_bg else 1
    xrows = np.empty((gy, nbx), np.float64)
    for lz in range(nbz):
        iz = z0 + lz
        if has_bg:
            fp = field_plane(field, fz0[iz], fzw[iz])
            for lx in range(nbx):
                xa = fx0[x0 + lx]
                xb = _lerp_index(xa, 0.0, gx)
                w = fxw[x0 + lx]
                for j in range(gy):
                    xrows[j, lx] = fp[j, xa] * (1.0 - w) + fp[j, xb] * w
        for ly in range(nby):
            iy = y0 + ly
            row = buf[lz, ly]
            if has_bg:
                ya = fy0[iy]
                yb = _lerp_index(ya, 0.0, gy)
                wy = fyw[iy]
                ra = xrows[ya]
                rb = xrows[yb]
                for lx in range(nbx):
                    v = row[lx] + ra[lx] * (1.0 - wy) + rb[lx] * wy
                    store(out, iz, iy, x0 + lx, v, offset, scale, is_int, lo, hi)
            else:
                for lx in range(nbx):
                    store(out, iz, iy, x0 + lx, row[lx], offset, scale, is_int, lo, hi)


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
def row_span(aq, bq, cq, cx, sx, stx, x_lo, x_hi, half_inv_aq, inv_stx):
    """Exact index span ``(ia, ib)`` of one row where d2 <= 9 (``ia > ib``: empty).

    Along the row, d2(dx) = aq dx^2 + bq dx + cq with dx = sx + stx * ix - cx.
    The roots give the span (``half_inv_aq = 0.5 / aq``, ``inv_stx = 1 / stx``:
    reciprocals the caller computes once); its ends are then checked against the direct d2
    so rounding in the roots cannot add or drop a voxel.
    """
    disc = bq * bq - 4.0 * aq * (cq - CUTOFF_D2)
    if disc < 0.0:
        return 1, 0
    sq = math.sqrt(disc)
    ia = math.ceil((cx + (-bq - sq) * half_inv_aq - sx) * inv_stx)
    ib = math.floor((cx + (-bq + sq) * half_inv_aq - sx) * inv_stx)
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


#: Below this ``aq stx^2`` a row is walked in two interleaved chains (every factor stays far inside
#: float64 range: q^4 >= exp(-200), ratios at a span's ends <= exp(3 sqrt(50))).
_TWO_CHAINS_MAX = 50.0


@njit(cache=True, error_model="numpy", inline="always")
def add_geometric(buf, iy, i0, i1, di, v, r, q, two):
    """Add ``v`` to ``buf[iy, i0]``, then step by ``di`` (+1 or -1) to ``i1`` (inclusive) with
    ``v <- v r``, ``r <- r q`` (a Gaussian sampled along a row).

    ``two``: run even and odd steps as two independent chains (``v`` two steps
    on is ``v r^2 q``, then ``v r^2 q^5`` ...), halving the multiply latency per voxel.
    """
    n = (i1 - i0) * di + 1
    if n <= 0:
        return
    ix = i0
    if two and n >= 4:
        q2 = q * q
        q4 = q2 * q2
        ve = v
        vo = v * r
        re = r * r * q
        ro = re * q2
        for _ in range(n // 2):
            buf[iy, ix] += ve
            buf[iy, ix + di] += vo
            ve *= re
            vo *= ro
            re *= q4
            ro *= q4
            ix += 2 * di
        if n % 2:
            buf[iy, ix] += ve
        return
    for _ in range(n):
        buf[iy, ix] += v
        v *= r
        r *= q
        ix += di


@njit(cache=True, error_model="numpy", nogil=True)
def direct_row(buf, iy, ia, ib, amp, cx, aq, bq, cq, q, sx, stx, two):
    """Add one Gaussian to ``buf[iy, ia..ib]``, exp recomputed every ``_RESYNC`` voxels."""
    h = stx
    ah2 = aq * h * h
    i0 = ia
    while i0 <= ib:
        i1 = min(i0 + _RESYNC, ib + 1)
        dx = sx + i0 * h - cx
        v = amp * math.exp(-0.5 * _row_d2(cq, bq, aq, dx))
        r = math.exp(-0.5 * (h * (2.0 * aq * dx + bq) + ah2))
        add_geometric(buf, iy, i0, i1 - 1, 1, v, r, q, two)
        i0 = i1


@njit(cache=True, error_model="numpy", inline="always")
def walk_row(buf, iy, ia, ib, anchor, e, r, q, two):
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
        add_geometric(buf, iy, ia, ib, 1, v, rr, q, two)
    elif anchor > ib:
        v = e
        s = q / r
        for _ in range(ib, anchor):
            v *= s
            s *= q
        add_geometric(buf, iy, ib, ia, -1, v, s, q, two)
    else:
        add_geometric(buf, iy, anchor, ib, 1, e, r, q, two)
        s = q / r
        add_geometric(buf, iy, anchor - 1, ia, -1, e * s, s * q, q, two)


#: Rows between direct recomputations of the anchor recurrences.
_ROW_RESYNC = 16
#: Above this d2 at the anchor column, a row is evaluated directly (exp(-d2/2) nears underflow).
_ANCHOR_MAX_D2 = 1200.0


@njit(cache=True, error_model="numpy", inline="always")
def plane_rows(g, i, zc, sy, sty, y_lo, y_hi):
    """Rows ``ja..jb`` (within ``y_lo..y_hi``; ``ja > jb``: none) that Gaussian ``i``'s ellipse may
    cover in the plane at Z coordinate ``zc``, and that ellipse's middle Y coordinate.

    The exact Y extent of the ellipse cut by the plane, plus one row each side
    (the row test, ``row_span``, rejects a row the ellipse misses).
    """
    dz = zc - g[i, CZ]
    szz = g[i, SZZ]
    r2 = CUTOFF_D2 - dz * dz / szz
    if r2 < -1e-9:
        return 1, 0, 0.0
    if r2 < 0.0:
        r2 = 0.0
    cyy = g[i, SYY] - g[i, SZY] * g[i, SZY] / szz
    if cyy < 0.0:
        cyy = 0.0
    half = math.sqrt(r2 * cyy)
    ymid = g[i, CY] + g[i, SZY] / szz * dz
    ja = math.ceil((ymid - half - sy) / sty) - 1
    jb = math.floor((ymid + half - sy) / sty) + 1
    if ja < y_lo:
        ja = y_lo
    if jb > y_hi:
        jb = y_hi
    return ja, jb, ymid


@njit(cache=True, error_model="numpy", inline="always")
def row_coefficients(g, i, dz):
    """Gaussian ``i`` along the rows of the plane ``dz`` from its centre:
    d2 = aq dx^2 + bq dx + cq with bq = b0 + b1 dy, cq = c0 + c1 dy + c2 dy^2."""
    return (2.0 * g[i, PZX] * dz, 2.0 * g[i, PYX], g[i, PZZ] * dz * dz, 2.0 * g[i, PZY] * dz, g[i, PYY])


@njit(cache=True, error_model="numpy", nogil=True)
def splat_plane(buf, i, g, zc, sy, sty, sx, stx, y_lo, y_hi, x_lo, x_hi, cnt):
    """Add Gaussian ``i`` to the plane buffer ``buf`` (ny, nx) at Z coordinate ``zc``.

    Row ``iy`` of ``buf`` is at Y = ``sy + iy * sty``, column ``ix`` at
    X = ``sx + ix * stx``. Rows come from ``plane_rows`` (limited to
    ``y_lo..y_hi``), columns are limited to ``x_lo..x_hi``. Each row's exact
    span comes from ``row_span``. Values are carried from row to row at one fixed
    anchor column by multiplicative recurrences (no exp per row; recomputed
    directly every ``_ROW_RESYNC`` rows) and walked along the row from there;
    rows whose span lies far from the anchor, or where the value at the
    anchor is too small to carry, are evaluated directly.
    ``cnt`` (int32, (ny, nx + 1), or (0, 0) for none): the voxels the
    Gaussian reaches are counted there as differences along each row (+1 at
    a span's first column, -1 after its last; ``coverage_rows`` sums them).
    """
    ja, jb, ymid = plane_rows(g, i, zc, sy, sty, y_lo, y_hi)
    if ja > jb:
        return
    counting = cnt.shape[0] > 0
    dz = zc - g[i, CZ]
    cy = g[i, CY]
    amp = g[i, AMP]
    cx = g[i, CX]
    aq = g[i, PXX]
    q = math.exp(-aq * stx * stx)
    b0, b1, c0, c1, c2 = row_coefficients(g, i, dz)
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
    two = aq * stx * stx < _TWO_CHAINS_MAX
    half_inv_aq = 0.5 / aq
    inv_stx = 1.0 / stx
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
        ia, ib = row_span(aq, bq, cq, cx, sx, stx, x_lo, x_hi, half_inv_aq, inv_stx)
        if ia <= ib:
            far = ia - anchor if anchor < ia else anchor - ib
            if valid > 0 and walkable and r > 0.0 and far <= 2 * (ib - ia) + 8:
                walk_row(buf, iy, ia, ib, anchor, e, r, q, two)
            else:
                direct_row(buf, iy, ia, ib, amp, cx, aq, bq, cq, q, sx, stx, two)
            if counting:
                cnt[iy, ia] += 1
                cnt[iy, ib + 1] -= 1
        if valid > 0:
            e *= y
            y *= qy
            r *= rho
            valid -= 1


# -- the K strongest contributions (evaluator "knn"; definition in knn.py) ------------


@njit(cache=True, error_model="numpy", inline="always")
def log_magnitude(amp, d2):
    """``log |amp exp(-d2 / 2)|``: the key contributions are ranked by (``-inf`` for a zero amplitude)."""
    return math.log(abs(amp)) - 0.5 * d2 if amp != 0.0 else -np.inf


@njit(cache=True, error_model="numpy", inline="always")
def ranks_before(ka, ia, kb, ib):
    """Whether a contribution with log-magnitude ``ka`` from Gaussian ``ia`` ranks before one with
    ``kb`` from ``ib``: larger magnitude first, equal magnitudes by the lower Gaussian index."""
    return ka > kb or (ka == kb and ia < ib)


@njit(cache=True, error_model="numpy", nogil=True)
def top_k_sum(total, keys, ids, g, a, b, k, mark):
    """Sum of the ``k`` contributions that rank first (``ranks_before``) among ``b - a`` contributions
    whose sum is ``total``; ``total`` itself if ``b - a <= k``.

    ``keys[a:b]``: their log-magnitudes (``log_magnitude``), ``ids[a:b]``: their
    Gaussians (rows of ``g``); a contribution is ``sign(amp) exp(key)``.
    ``mark``: bool scratch of length >= ``b - a``. The ``min(k, n - k)``
    entries on the smaller side are marked by repeated scans (O(n min(k, n - k));
    n is a voxel's coverage, tens) and only they are evaluated: ``total``
    minus the ``n - k`` last-ranked, or the sum of the ``k`` first-ranked.
    """
    n = b - a
    if n <= k:
        return total
    drop = n - k
    worst = drop <= k  # mark the `drop` last-ranked, else the k first-ranked
    picks = drop if worst else k
    for t in range(n):
        mark[t] = False
    s = total if worst else 0.0
    for _ in range(picks):
        w = -1
        for t in range(a, b):
            if mark[t - a]:
                continue
            if w < 0:
                w = t
            elif worst and ranks_before(keys[w], ids[w], keys[t], ids[t]):
                w = t
            elif not worst and ranks_before(keys[t], ids[t], keys[w], ids[w]):
                w = t
        mark[w - a] = True
        c = math.exp(keys[w])
        if g[ids[w], AMP] < 0.0:
            c = -c
        s = s - c if worst else s + c
    return s


@njit(cache=True, error_model="numpy", nogil=True)
def coverage_rows(cnt, ny):
    """Turn the first ``ny`` rows of ``splat_plane``'s row differences into counts, in place."""
    for iy in range(ny):
        c = 0
        for ix in range(cnt.shape[1]):
            c += cnt[iy, ix]
            cnt[iy, ix] = c


@njit(cache=True, error_model="numpy", nogil=True)
def keep_top_k(buf, cnt, k, g, idx, j0, j1, zc, sy, sty, sx, stx, stats):
    """Replace, in the plane buffer ``buf`` (ny, nx), each voxel reached by more than ``k`` Gaussians
    (``cnt``: counts, (ny, >= nx); ``coverage_rows``) by the sum of its ``k`` first-ranked contributions.

    ``idx[j0:j1]``: the Gaussians splatted into ``buf`` (rows at Y = ``sy + iy * sty``,
    columns at X = ``sx + ix * stx``). Their contributions at those voxels are
    gathered through the splat's own rows and spans (``plane_rows``, ``row_span``;
    rows without such voxels in the Gaussian's box are skipped) as log-magnitudes
    and ranked by ``top_k_sum``, which evaluates only the side it removes or keeps.
    ``stats`` (5,) accumulates: voxels replaced, sum of squared changes, largest
    change, and the largest and smallest exact sum among them.
    """
    ny, nx = buf.shape
    rowptr = np.zeros(ny + 1, np.int64)
    total = 0
    for iy in range(ny):
        m = 0
        for ix in range(nx):
            c = cnt[iy, ix]
            if c > k:
                m += 1
                total += c
        rowptr[iy + 1] = rowptr[iy] + m
    nover = rowptr[ny]
    if nover == 0:
        return
    rows = np.empty(nover, np.int64)
    cols = np.empty(nover, np.int64)
    base = np.empty(nover + 1, np.int64)
    t = 0
    base[0] = 0
    widest = 0
    for iy in range(ny):
        if rowptr[iy + 1] == rowptr[iy]:
            continue
        for ix in range(nx):
            c = cnt[iy, ix]
            if c > k:
                rows[t] = iy
                cols[t] = ix
                base[t + 1] = base[t] + c
                widest = max(widest, c)
                t += 1
    keys = np.empty(total, np.float64)
    ids = np.empty(total, np.int64)
    fill = base[:-1].copy()
    row_lo = rows[0]
    row_hi = rows[nover - 1]
    inv_stx = 1.0 / stx
    for j in range(j0, j1):
        i = idx[j]
        ja, jb, _ = plane_rows(g, i, zc, sy, sty, row_lo, row_hi)
        if ja > jb:
            continue
        dz = zc - g[i, CZ]
        cy = g[i, CY]
        cx = g[i, CX]
        aq = g[i, PXX]
        amp = g[i, AMP]
        b0, b1, c0, c1, c2 = row_coefficients(g, i, dz)
        half_inv_aq = 0.5 / aq
        log_amp = math.log(abs(amp)) if amp != 0.0 else -np.inf
        # columns of the Gaussian's 3-sigma box (a superset of every row's span)
        xa = math.ceil((cx - g[i, EX] - sx) * inv_stx) - 1
        xb = math.floor((cx + g[i, EX] - sx) * inv_stx) + 1
        for iy in range(ja, jb + 1):
            r0 = rowptr[iy]
            r1 = rowptr[iy + 1]
            if r0 == r1 or cols[r0] > xb or cols[r1 - 1] < xa:
                continue
            dy = sy + iy * sty - cy
            bq = b0 + b1 * dy
            cq = c0 + dy * (c1 + c2 * dy)
            ia, ib = row_span(aq, bq, cq, cx, sx, stx, 0, nx - 1, half_inv_aq, inv_stx)
            for t in range(r0, r1):
                ix = cols[t]
                if ix < ia:
                    continue
                if ix > ib:
                    break
                p = fill[t]
                if p < base[t + 1]:  # always: the splat counted the same spans
                    keys[p] = log_amp - 0.5 * _row_d2(cq, bq, aq, sx + ix * stx - cx)
                    ids[p] = i
                    fill[t] = p + 1
    mark = np.empty(widest, np.bool_)
    for t in range(nover):
        iy = rows[t]
        ix = cols[t]
        exact = buf[iy, ix]
        kept = top_k_sum(exact, keys, ids, g, base[t], fill[t], k, mark)
        d = exact - kept
        stats[0] += 1.0
        stats[1] += d * d
        stats[2] = max(stats[2], abs(d))
        stats[3] = max(stats[3], exact)
        stats[4] = min(stats[4], exact)
        buf[iy, ix] = kept


#: Columns of the statistics ``splat_decode`` returns (per call, summed over threads).
STAT_REPLACED, STAT_SQ, STAT_MAX, STAT_HI, STAT_LO = 0, 1, 2, 3, 4


@njit(cache=True, error_model="numpy", parallel=True, nogil=True)
def splat_decode(g, ptr, idx, start, step, k, field, fz0, fzw, fy0, fyw, fx0, fxw, offset, scale, is_int, lo, hi,
                 out, nthreads):
    """Gather Gaussian footprints onto ``out`` (nz, ny, nx): the exact sum (``k <= 0``) or, at each
    voxel, the sum of its ``k`` strongest contributions (``keep_top_k``).

    Output voxel ``(iz, iy, ix)`` is at coordinate ``start + step * (iz, iy, ix)``.
    ``ptr, idx``: per-plane Gaussian lists (``plane_lists``). ``field``: the
    background grid (float64; shape (0, 0, 0) for none) with per-axis
    interpolation nodes/weights ``f?0, f?w`` for the output coordinates.
    Work items are whole Z planes, or bands of rows of a plane when there are
    fewer planes than ``nthreads`` (so a single slice uses every thread too);
    each of ``nthreads`` chunks takes every ``nthreads``-th item, sums into a
    float64 buffer (no write conflicts), adds the background and writes
    ``offset + scale * value`` converted to ``out``'s dtype. Returns the
    ``keep_top_k`` statistics (5,), in model units (zeros for ``k <= 0``).
    """
    nz, ny, nx = out.shape
    sz, sy, sx = float(start[0]), float(start[1]), float(start[2])
    stz, sty, stx = float(step[0]), float(step[1]), float(step[2])
    nbands = 1
    if nz < nthreads:
        nbands = min((nthreads + nz - 1) // nz, max(1, ny // 16))
    band = (ny + nbands - 1) // nbands
    nitems = nz * nbands
    nchunks = max(1, min(nthreads, nitems))
    stats = np.zeros((nchunks, 5), np.float64)
    for c in prange(nchunks):
        st = stats[c]
        st[STAT_LO] = np.inf
        st[STAT_HI] = -np.inf
        full = np.empty((1, band, nx), np.float64)
        full_cnt = np.zeros((band, nx + 1) if k > 0 else (0, 0), np.int32)
        for item in range(c, nitems, nchunks):
            iz = item // nbands
            y0 = (item % nbands) * band
            h = min(band, ny - y0)
            # whole (C-contiguous) buffers, so the loops over them vectorise
            buf = full if h == band else np.empty((1, h, nx), np.float64)
            cnt = full_cnt if (h == band or k <= 0) else np.empty((h, nx + 1), np.int32)
            zc = sz + iz * stz
            yc = sy + y0 * sty
            plane = buf[0]
            plane[:] = 0.0
            if k > 0:
                cnt[:] = 0
            for j in range(ptr[iz], ptr[iz + 1]):
                splat_plane(plane, idx[j], g, zc, yc, sty, sx, stx, 0, h - 1, 0, nx - 1, cnt)
            if k > 0:
                coverage_rows(cnt, h)
                keep_top_k(plane, cnt, k, g, idx, ptr[iz], ptr[iz + 1], zc, yc, sty, sx, stx, st)
            _finish_block(buf, iz, y0, 0, field, fz0, fzw, fy0, fyw, fx0, fxw, offset, scale, is_int, lo, hi, out)
    total = np.zeros(5, np.float64)
    total[STAT_LO] = np.inf
    total[STAT_HI] = -np.inf
    for c in range(nchunks):
        total[STAT_REPLACED] += stats[c, STAT_REPLACED]
        total[STAT_SQ] += stats[c, STAT_SQ]
        total[STAT_MAX] = max(total[STAT_MAX], stats[c, STAT_MAX])
        total[STAT_HI] = max(total[STAT_HI], stats[c, STAT_HI])
        total[STAT_LO] = min(total[STAT_LO], stats[c, STAT_LO])
    return total


# -- points ------------------------------------------------------------------------


@njit(cache=True, error_model="numpy", inline="always")
def cell_of(points, p, origin, cell, ncell):
    """Index (C order) of the ``bin_boxes`` cell holding ``points[p]``, or -1 outside the grid."""
    cid = 0
    for a in range(3):
        t = math.floor((points[p, a] - origin[a]) / cell[a])
        if t < 0 or t > ncell[a] - 1:
            return -1
        cid = cid * ncell[a] + t
    return cid


@njit(cache=True, error_model="numpy", parallel=True, nogil=True)
def points_sum(g, points, origin, cell, ncell, ptr, idx, k):
    """Sum at (M, 3) points from cell lists (``bin_boxes``); float64 (M,).

    Every Gaussian with ``d2 <= 9`` at the point (``k <= 0``: the exact sum),
    or only the ``k`` whose contributions rank first (``top_k_sum``).
    """
    m = points.shape[0]
    out = np.zeros(m, np.float64)
    for p in prange(m):
        cid = cell_of(points, p, origin, cell, ncell)
        if cid < 0:
            continue
        z, y, x = points[p, 0], points[p, 1], points[p, 2]
        s = 0.0
        n = 0
        for j in range(ptr[cid], ptr[cid + 1]):
            i = idx[j]
            d2 = mahalanobis2(g, i, z - g[i, CZ], y - g[i, CY], x - g[i, CX])
            if d2 <= CUTOFF_D2:
                s += g[i, AMP] * math.exp(-0.5 * d2)
                n += 1
        if k > 0 and n > k:
            keys = np.empty(n, np.float64)
            ids = np.empty(n, np.int64)
            n = 0
            for j in range(ptr[cid], ptr[cid + 1]):
                i = idx[j]
                d2 = mahalanobis2(g, i, z - g[i, CZ], y - g[i, CY], x - g[i, CX])
                if d2 <= CUTOFF_D2:
                    keys[n] = log_magnitude(g[i, AMP], d2)
                    ids[n] = i
                    n += 1
            s = top_k_sum(s, keys, ids, g, 0, n, k, np.empty(n, np.bool_))
        out[p] = s
    return out
