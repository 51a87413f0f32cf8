"""numba kernels of the coding contexts (the plain numpy definitions are in ``contexts.py``;
``tests/test_residual.py`` checks one against the other).

Imported on first use: importing ``napari_volmicro`` does not import numba.
"""

from __future__ import annotations

import numba
import numpy as np

from .contexts import N_CTX_A
from .entropy import ESCAPE


@numba.njit(cache=True, nogil=True)
def _bitlen(v):
    n = 0
    while v > 0:
        v >>= 1
        n += 1
    return n


@numba.njit(cache=True, nogil=True)
def add_resampled(dst, src, weight):
    """``dst += weight * min(|src|, ESCAPE)`` mapped by index ``i * n_src // n_dst`` per axis."""
    nz, ny, nx = dst.shape
    mz, my, mx = src.shape
    ix = np.empty(nx, np.int64)
    for x in range(nx):
        ix[x] = x * mx // nx
    for z in range(nz):
        sz = z * mz // nz
        for y in range(ny):
            sy = y * my // ny
            for x in range(nx):
                v = abs(src[sz, sy, ix[x]])
                dst[z, y, x] += weight * (v if v < ESCAPE else ESCAPE)


@numba.njit(cache=True, nogil=True)
def phase_contexts(ps, q, odd):
    """Contexts of the phase-A (``odd`` False) or phase-B voxels of a band, in raster order.

    ps: ``2 P + S`` per voxel; q: the band's indices (for phase B only the even voxels are read:
    they are the six face neighbours of an odd voxel).
    """
    nz, ny, nx = q.shape
    n_here = 0
    for z in range(nz):
        for y in range(ny):
            n_here += (nx - ((z + y + odd) & 1) + 1) // 2
    out = np.empty(n_here, np.int64)
    k = 0
    for z in range(nz):
        for y in range(ny):
            for x in range((z + y + odd) & 1, nx, 2):
                p = _bitlen(ps[z, y, x])
                if not odd:
                    out[k] = p if p < N_CTX_A - 1 else N_CTX_A - 1
                else:
                    s = 0
                    if z > 0:
                        s += min(abs(q[z - 1, y, x]), ESCAPE)
                    if z + 1 < nz:
                        s += min(abs(q[z + 1, y, x]), ESCAPE)
                    if y > 0:
                        s += min(abs(q[z, y - 1, x]), ESCAPE)
                    if y + 1 < ny:
                        s += min(abs(q[z, y + 1, x]), ESCAPE)
                    if x > 0:
                        s += min(abs(q[z, y, x - 1]), ESCAPE)
                    if x + 1 < nx:
                        s += min(abs(q[z, y, x + 1]), ESCAPE)
                    nb = _bitlen(s)
                    out[k] = N_CTX_A + 3 * (nb if nb < 4 else 4) + (p if p < 2 else 2)
                k += 1
    return out


@numba.njit(cache=True, nogil=True)
def gather_phase(q, odd):
    """The values of the phase-A (``odd`` False) or phase-B voxels of ``q``, raster order."""
    nz, ny, nx = q.shape
    n = 0
    for z in range(nz):
        for y in range(ny):
            n += (nx - ((z + y + odd) & 1) + 1) // 2
    out = np.empty(n, q.dtype)
    k = 0
    for z in range(nz):
        for y in range(ny):
            for x in range((z + y + odd) & 1, nx, 2):
                out[k] = q[z, y, x]
                k += 1
    return out


@numba.njit(cache=True, nogil=True)
def scatter_phase(q, values, odd):
    """Inverse of ``gather_phase``: write ``values`` into the phase's voxels of ``q``."""
    nz, ny, nx = q.shape
    k = 0
    for z in range(nz):
        for y in range(ny):
            for x in range((z + y + odd) & 1, nx, 2):
                q[z, y, x] = values[k]
                k += 1


@numba.njit(cache=True, nogil=True)
def slice_contexts(q, z, odd):
    """Contexts of the correction stage for the phase-A (``odd`` False: even ``y + x``) or phase-B
    voxels of slice ``z`` of ``q``, raster order (see ``correction.py`` for the definition)."""
    nz, ny, nx = q.shape
    n = 0
    for y in range(ny):
        n += (nx - ((y + odd) & 1) + 1) // 2
    out = np.empty(n, np.int64)
    k = 0
    for y in range(ny):
        for x in range((y + odd) & 1, nx, 2):
            p = 0
            if z > 0:
                p = 2 * min(abs(q[z - 1, y, x]), ESCAPE)
                if y > 0:
                    p += min(abs(q[z - 1, y - 1, x]), ESCAPE)
                if y + 1 < ny:
                    p += min(abs(q[z - 1, y + 1, x]), ESCAPE)
                if x > 0:
                    p += min(abs(q[z - 1, y, x - 1]), ESCAPE)
                if x + 1 < nx:
                    p += min(abs(q[z - 1, y, x + 1]), ESCAPE)
            bp = _bitlen(p)
            if not odd:
                out[k] = bp if bp < 7 else 7
            else:
                s = 0
                if y > 0:
                    s += min(abs(q[z, y - 1, x]), ESCAPE)
                if y + 1 < ny:
                    s += min(abs(q[z, y + 1, x]), ESCAPE)
                if x > 0:
                    s += min(abs(q[z, y, x - 1]), ESCAPE)
                if x + 1 < nx:
                    s += min(abs(q[z, y, x + 1]), ESCAPE)
                bs = _bitlen(s)
                out[k] = 8 + 4 * (bs if bs < 4 else 4) + (bp if bp < 3 else 3)
            k += 1
    return out


# -- CDF 9/7 lifting along one axis, in place (the numpy definition is ``wavelet.split`` / ``merge``) --


@numba.njit(cache=True, nogil=True)
def _split_line(x, tmp, n, alpha, beta, gamma, delta, low_scale, high_scale):
    ns = (n + 1) // 2
    nd = n // 2
    s = tmp[:ns]
    d = tmp[ns:n]
    for i in range(ns):
        s[i] = x[2 * i]
    for i in range(nd):
        d[i] = x[2 * i + 1]
    for i in range(nd):
        d[i] += alpha * (s[i] + s[i + 1 if i + 1 < ns else ns - 1])
    for i in range(ns):
        d_prev = d[i - 1] if i > 0 else d[0]
        d_here = d[i] if i < nd else d[nd - 1]
        s[i] += beta * (d_prev + d_here)
    for i in range(nd):
        d[i] += gamma * (s[i] + s[i + 1 if i + 1 < ns else ns - 1])
    for i in range(ns):
        d_prev = d[i - 1] if i > 0 else d[0]
        d_here = d[i] if i < nd else d[nd - 1]
        s[i] += delta * (d_prev + d_here)
    for i in range(ns):
        x[i] = s[i] * low_scale
    for i in range(nd):
        x[ns + i] = d[i] * high_scale


@numba.njit(cache=True, nogil=True)
def _merge_line(x, tmp, n, alpha, beta, gamma, delta, low_scale, high_scale):
    ns = (n + 1) // 2
    nd = n // 2
    s = tmp[:ns]
    d = tmp[ns:n]
    for i in range(ns):
        s[i] = x[i] / low_scale
    for i in range(nd):
        d[i] = x[ns + i] / high_scale
    for i in range(ns):
        d_prev = d[i - 1] if i > 0 else d[0]
        d_here = d[i] if i < nd else d[nd - 1]
        s[i] -= delta * (d_prev + d_here)
    for i in range(nd):
        d[i] -= gamma * (s[i] + s[i + 1 if i + 1 < ns else ns - 1])
    for i in range(ns):
        d_prev = d[i - 1] if i > 0 else d[0]
        d_here = d[i] if i < nd else d[nd - 1]
        s[i] -= beta * (d_prev + d_here)
    for i in range(nd):
        d[i] -= alpha * (s[i] + s[i + 1 if i + 1 < ns else ns - 1])
    for i in range(ns):
        x[2 * i] = s[i]
    for i in range(nd):
        x[2 * i + 1] = d[i]


@numba.njit(cache=True, nogil=True)
def lift_axis(c, b0, b1, b2, axis, inverse, alpha, beta, gamma, delta, low_scale, high_scale):
    """One analysis (``inverse`` False) or synthesis level along ``axis`` of ``c[:b0, :b1, :b2]``, in place."""
    n = (b0, b1, b2)[axis]
    line = np.empty(n, np.float64)
    tmp = np.empty(n, np.float64)
    if axis == 0:
        for j in range(b1):
            for k in range(b2):
                for i in range(n):
                    line[i] = c[i, j, k]
                if inverse:
                    _merge_line(line, tmp, n, alpha, beta, gamma, delta, low_scale, high_scale)
                else:
                    _split_line(line, tmp, n, alpha, beta, gamma, delta, low_scale, high_scale)
                for i in range(n):
                    c[i, j, k] = line[i]
    elif axis == 1:
        for i in range(b0):
            for k in range(b2):
                for j in range(n):
                    line[j] = c[i, j, k]
                if inverse:
                    _merge_line(line, tmp, n, alpha, beta, gamma, delta, low_scale, high_scale)
                else:
                    _split_line(line, tmp, n, alpha, beta, gamma, delta, low_scale, high_scale)
                for j in range(n):
                    c[i, j, k] = line[j]
    else:
        for i in range(b0):
            for j in range(b1):
                for k in range(n):
                    line[k] = c[i, j, k]
                if inverse:
                    _merge_line(line, tmp, n, alpha, beta, gamma, delta, low_scale, high_scale)
                else:
                    _split_line(line, tmp, n, alpha, beta, gamma, delta, low_scale, high_scale)
                for k in range(n):
                    c[i, j, k] = line[k]


# -- counting a whole block (the encoder's size estimate; the definition is wavelet_coder.phases) --

#: columns of the band table ``band_table``: z0 z1 y0 y1 x0 x1 cls parent sib0..sib6
BAND_COLS = 15


@numba.njit(cache=True, nogil=True)
def _band_act(q, bt, j, z, y, x, nz, ny, nx):
    """Activity of band ``j`` at the position mapped from (z, y, x) of a band of dims (nz, ny, nx)."""
    mz = bt[j, 1] - bt[j, 0]
    my = bt[j, 3] - bt[j, 2]
    mx = bt[j, 5] - bt[j, 4]
    v = abs(q[bt[j, 0] + z * mz // nz, bt[j, 2] + y * my // ny, bt[j, 4] + x * mx // nx])
    return v if v < ESCAPE else ESCAPE


@numba.njit(cache=True, nogil=True)
def count_block(q, bt, counts):
    """Add the (class, context, symbol) counts of block ``q`` to ``counts`` (N_CLASSES, N_CTX, ALPHABET);
    returns the bits spent outside the tables (band flags, signs, escape excesses: 2 bitlen - 1 each)."""
    nb = bt.shape[0]
    nonzero = np.zeros(nb, np.bool_)
    extra = float(nb)
    for i in range(nb):
        z0, z1, y0, y1, x0, x1 = bt[i, 0], bt[i, 1], bt[i, 2], bt[i, 3], bt[i, 4], bt[i, 5]
        nz, ny, nx = z1 - z0, y1 - y0, x1 - x0
        any_nz = False
        for z in range(z0, z1):
            for y in range(y0, y1):
                for x in range(x0, x1):
                    if q[z, y, x] != 0:
                        any_nz = True
                        break
                if any_nz:
                    break
            if any_nz:
                break
        nonzero[i] = any_nz
        if not any_nz:
            continue
        cls = bt[i, 6]
        par = bt[i, 7]
        for z in range(nz):
            for y in range(ny):
                for x in range(nx):
                    odd = (z + y + x) & 1
                    ps = 0
                    if par >= 0 and nonzero[par]:
                        ps += 2 * _band_act(q, bt, par, z, y, x, nz, ny, nx)
                    for s in range(8, BAND_COLS):
                        j = bt[i, s]
                        if j >= 0 and nonzero[j]:
                            ps += _band_act(q, bt, j, z, y, x, nz, ny, nx)
                    p = _bitlen(ps)
                    if odd == 0:
                        c = p if p < N_CTX_A - 1 else N_CTX_A - 1
                    else:
                        n = 0
                        if z > 0:
                            n += min(abs(q[z0 + z - 1, y0 + y, x0 + x]), ESCAPE)
                        if z + 1 < nz:
                            n += min(abs(q[z0 + z + 1, y0 + y, x0 + x]), ESCAPE)
                        if y > 0:
                            n += min(abs(q[z0 + z, y0 + y - 1, x0 + x]), ESCAPE)
                        if y + 1 < ny:
                            n += min(abs(q[z0 + z, y0 + y + 1, x0 + x]), ESCAPE)
                        if x > 0:
                            n += min(abs(q[z0 + z, y0 + y, x0 + x - 1]), ESCAPE)
                        if x + 1 < nx:
                            n += min(abs(q[z0 + z, y0 + y, x0 + x + 1]), ESCAPE)
                        nbits = _bitlen(n)
                        c = N_CTX_A + 3 * (nbits if nbits < 4 else 4) + (p if p < 2 else 2)
                    v = abs(q[z0 + z, y0 + y, x0 + x])
                    counts[cls, c, v if v < ESCAPE else ESCAPE] += 1
                    if v != 0:
                        extra += 1.0
                    if v >= ESCAPE:
                        extra += 2.0 * _bitlen(v - ESCAPE + 1) - 1.0
    return extra


@numba.njit(cache=True, nogil=True)
def count_correction(q, counts):
    """Add the (context, symbol) counts of a correction block to ``counts`` (N_CORR_CTX, ALPHABET); returns
    the bits of signs and escape excesses (definition: ``correction._phases``)."""
    nz, ny, nx = q.shape
    extra = 0.0
    for z in range(nz):
        for odd in range(2):
            cx = slice_contexts(q, z, odd)
            k = 0
            for y in range(ny):
                for x in range((y + odd) & 1, nx, 2):
                    v = abs(q[z, y, x])
                    counts[cx[k], v if v < ESCAPE else ESCAPE] += 1
                    if v != 0:
                        extra += 1.0
                    if v >= ESCAPE:
                        extra += 2.0 * _bitlen(v - ESCAPE + 1) - 1.0
                    k += 1
    return extra


@numba.njit(cache=True, nogil=True)
def group_by_entry(contexts, entries, n_entries):
    """Positions grouped by the codebook entry their context selects (stable counting sort):
    (order, entry values present in increasing order, group bounds). Same result as a stable
    argsort of ``entries[contexts]`` (``entropy._groups_reference``)."""
    n = contexts.shape[0]
    counts = np.zeros(n_entries + 1, np.int64)
    for i in range(n):
        counts[entries[contexts[i]] + 1] += 1
    n_groups = 0
    for e in range(n_entries):
        if counts[e + 1] > 0:
            n_groups += 1
    values = np.empty(n_groups, np.int64)
    bounds = np.empty(n_groups + 1, np.int64)
    g = 0
    for e in range(n_entries):
        if counts[e + 1] > 0:
            values[g] = e
            g += 1
    for e in range(n_entries):
        counts[e + 1] += counts[e]
    g = 0
    for e in range(n_entries):
        if counts[e + 1] > counts[e]:
            bounds[g] = counts[e]
            g += 1
    bounds[n_groups] = n
    order = np.empty(n, np.int64)
    for i in range(n):
        e = entries[contexts[i]]
        order[counts[e]] = i
        counts[e] += 1
    return order, values, bounds


@numba.njit(cache=True, nogil=True)
def dequantize_block(q, bt, gains, step, nu, out):
    """``wavelet_coder.dequantize`` of one block into ``out`` (float64): band ``i`` (rows of ``bt``) with
    step ``step / gains[i]``; detail indices rebuilt at ``sign(q) (|q| + nu[class]) s``."""
    for i in range(bt.shape[0]):
        s = step / gains[i]
        cls = bt[i, 6]
        off = nu[cls] * s
        for z in range(bt[i, 0], bt[i, 1]):
            for y in range(bt[i, 2], bt[i, 3]):
                for x in range(bt[i, 4], bt[i, 5]):
                    v = q[z, y, x]
                    if v == 0:
                        out[z, y, x] = 0.0
                    elif cls == 0:
                        out[z, y, x] = v * s
                    elif v > 0:
                        out[z, y, x] = v * s + off
                    else:
                        out[z, y, x] = v * s - off


# -- the linear-predictive correction form (``linear.py``) -----------------------------------------


@numba.njit(cache=True, nogil=True, inline="always")
def _linear_predict(rec, w, offsets, z, y, x):
    nz, ny, nx = rec.shape
    p = 0.0
    for k in range(offsets.shape[0]):
        zz = z - offsets[k, 0]
        yy = y - offsets[k, 1]
        xx = x - offsets[k, 2]
        if zz >= 0 and 0 <= yy < ny and 0 <= xx < nx:
            p += w[k] * rec[zz, yy, xx]
    return p


@numba.njit(cache=True, nogil=True)
def linear_quantize(r, w, offsets, step):
    """``linear.quantize_block``: (int64 indices, float64 rebuilt values) of one block (definition: ``linear.py``)."""
    nz, ny, nx = r.shape
    q = np.zeros((nz, ny, nx), np.int64)
    rec = np.zeros((nz, ny, nx), np.float64)
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                p = _linear_predict(rec, w, offsets, z, y, x)
                v = np.rint((r[z, y, x] - p) / step)
                q[z, y, x] = np.int64(v)
                rec[z, y, x] = p + v * step
    return q, rec


@numba.njit(cache=True, nogil=True)
def linear_rebuild(q, w, offsets, step):
    """``linear.rebuild``: float64 values of a block from its indices (plain definition: ``linear.rebuild_reference``)."""
    nz, ny, nx = q.shape
    rec = np.zeros((nz, ny, nx), np.float64)
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                rec[z, y, x] = _linear_predict(rec, w, offsets, z, y, x) + np.float64(q[z, y, x]) * step
    return rec


@numba.njit(cache=True, nogil=True)
def linear_normal_equations(target, source, offsets, ata, atb):
    """Add one block's normal equations: rows = voxels, columns = ``source`` at the causal neighbours
    (0 outside the block), right-hand side = ``target``."""
    nz, ny, nx = target.shape
    n = offsets.shape[0]
    u = np.zeros(n)
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                for k in range(n):
                    zz = z - offsets[k, 0]
                    yy = y - offsets[k, 1]
                    xx = x - offsets[k, 2]
                    u[k] = source[zz, yy, xx] if (zz >= 0 and 0 <= yy < ny and 0 <= xx < nx) else 0.0
                t = target[z, y, x]
                for i in range(n):
                    atb[i] += u[i] * t
                    for j in range(n):
                        ata[i, j] += u[i] * u[j]
