"""The footprint math of one Gaussian on a strided voxel lattice, as plain Python.

One definition, compiled twice: ``encode/_kernels.py`` compiles these
functions with ``numba.njit`` (the CPU kernels) and ``_cuda_footprint.py``
with ``numba.cuda.jit(device=True)`` (the GPU kernels; under numba's CUDA
simulator they run as the Python written here). Nothing here imports numba.

A lattice is the voxel set ``off[a] + stride[a] * i`` (``i < n[a]``) per axis,
ZYX, voxel units. A Gaussian is its centre, the six distinct entries of its
precision matrix ``(Pzz, Pyy, Pxx, Pzy, Pzx, Pyx)`` (voxel^-2) and the
half-widths of its axis-aligned 3-sigma box (voxels). It contributes
``w exp(-d^2 / 2)`` wherever ``d^2 <= CUTOFF_D2`` (inclusive).

Along a lattice row (fixed z, y), with ``dx = x - cx``:
``d^2 = cst + dx (2 b + pxx dx)``, ``b = pzx dz + pyx dy``,
``cst = pzz dz^2 + 2 pzy dz dy + pyy dy^2`` (``row_coeffs``).

A function here calls no other function of this file: numba compiles calls
to compiled functions only, so each is self-contained (CPU and GPU alike).

Editing this file: numba caches compiled kernels by the file that defines the
kernel, not by the files whose functions it inlines; clear the ``__pycache__``
folders of ``encode/`` and ``evaluate/`` afterwards.
"""

from __future__ import annotations

import math

CUTOFF_D2 = 9.0


def axis_range(c, h, off, stride, n):
    """Lattice indices ``lo..hi`` (clipped to ``0..n-1``) inside ``[c - h, c + h]``; ``lo > hi``: none."""
    lo = int(math.ceil((c - h - off) / stride))  # int(): CUDA's ceil/floor return floats
    hi = int(math.floor((c + h - off) / stride))
    if lo < 0:
        lo = 0
    if hi > n - 1:
        hi = n - 1
    return lo, hi


def row_coeffs(pzz, pyy, pzy, pzx, pyx, dz, dy):
    """``(b, c)`` of a row at offsets ``dz, dy``: ``d^2 - 9 = pxx dx^2 + 2 b dx + c``."""
    b = pzx * dz + pyx * dy
    c = pzz * dz * dz + 2.0 * pzy * dz * dy + pyy * dy * dy - CUTOFF_D2
    return b, c


def row_span(b, c, pxx, cx, off_x, sx, nx):
    """Lattice x-indices ``ix0..ix1`` of one row inside the 3-sigma ellipsoid (``ix0 > ix1``: none).

    The row's d^2 - 9 is ``pxx dx^2 + 2 b dx + c`` with ``dx = x - cx``; its roots bound the span.
    Callers still test ``row_d2 <= CUTOFF_D2`` per sample (the roots are rounded).
    """
    disc = b * b - pxx * c
    if disc < 0.0:
        return 1, 0
    sq = math.sqrt(disc)
    xlo = cx + (-b - sq) / pxx
    xhi = cx + (-b + sq) / pxx
    ix0 = int(math.ceil((xlo - off_x) / sx))
    ix1 = int(math.floor((xhi - off_x) / sx))
    if ix0 < 0:
        ix0 = 0
    if ix1 > nx - 1:
        ix1 = nx - 1
    return ix0, ix1


def row_d2(cst, b, pxx, dx):
    """Squared Mahalanobis distance at ``dx`` along a row (``cst = c + CUTOFF_D2``)."""
    return cst + dx * (2.0 * b + pxx * dx)


def row_start(cst, b, pxx, dx0, sx):
    """``exp(-d^2/2)`` at a row's first sample and the ratio to the next one.

    Along a row ``d^2`` is quadratic in x, so successive values of
    ``g = exp(-d^2/2)`` follow ``g <- g * ratio; ratio <- ratio * q`` with
    ``q = exp(-pxx sx^2)``: two multiplications per sample instead of an
    ``exp`` (relative drift ~1e-16 per sample in float64).
    """
    d2 = cst + dx0 * (2.0 * b + pxx * dx0)
    return math.exp(-0.5 * d2), math.exp(-0.5 * sx * (2.0 * b + pxx * (2.0 * dx0 + sx)))


def row_moments(r0, r1, r2, dz, dy):
    """The ten gradient sums of one row from its three sums along x.

    ``r0 = sum r g``, ``r1 = sum r g dx``, ``r2 = sum r g dx^2`` over the row's
    samples (dz, dy fixed) give [sum r g, sum r g dz, dy, dx, sum r g dz^2,
    dy^2, dx^2, dz dy, dz dx, dy dx] for that row.
    """
    return (r0, r0 * dz, r0 * dy, r1, r0 * dz * dz, r0 * dy * dy, r2, r0 * dz * dy, r1 * dz, r1 * dy)


def fixed_point_scale(abs_amp_sum):
    """Scale ``2^e`` of the GPU's int64 fixed-point sums for Gaussians whose ``sum |w| = abs_amp_sum``.

    Every partial sum of ``round(scale * w exp(-d^2/2))`` stays below ``2^61``
    in magnitude, so int64 atomics cannot overflow, and each term's rounding is
    at most ``abs_amp_sum * 2^-62`` (float64-like). Integer addition is
    associative: GPU sums are identical from run to run whatever the order.
    """
    if not abs_amp_sum > 0.0 or not math.isfinite(abs_amp_sum):
        return 1.0
    e = math.frexp(abs_amp_sum)[1]  # abs_amp_sum < 2^e
    return math.ldexp(1.0, 61 - e)


def background_at(field, iz0, wz, iy0, wy, ix0, wx):
    """Trilinear background at one voxel from per-axis nodes/weights (Z first, then Y, then X)."""
    iz1 = min(iz0 + 1, field.shape[0] - 1)  # the upper node, clamped to the last
    iy1 = min(iy0 + 1, field.shape[1] - 1)
    ix1 = min(ix0 + 1, field.shape[2] - 1)
    a = field[iz0, iy0, ix0] * (1.0 - wz) + field[iz1, iy0, ix0] * wz
    b = field[iz0, iy1, ix0] * (1.0 - wz) + field[iz1, iy1, ix0] * wz
    c = field[iz0, iy0, ix1] * (1.0 - wz) + field[iz1, iy0, ix1] * wz
    d = field[iz0, iy1, ix1] * (1.0 - wz) + field[iz1, iy1, ix1] * wz
    b0 = a * (1.0 - wy) + b * wy
    b1 = c * (1.0 - wy) + d * wy
    return b0 * (1.0 - wx) + b1 * wx


def to_output(v, offset, scale, is_int, lo, hi):
    """``offset + scale * v``, rounded half-even and clipped to ``[lo, hi]`` for integer outputs."""
    v = offset + scale * v
    if is_int:  # round half to even (as numpy.rint), inline: numba compiles no calls to plain functions
        f = float(math.floor(v))
        d = v - f
        if d > 0.5 or (d == 0.5 and f - 2.0 * math.floor(0.5 * f) != 0.0):
            f += 1.0
        v = f
        if v < lo:
            v = lo
        elif v > hi:
            v = hi
    return v


def top_k_in_id_order(vals, ids, keep, a, b, k):
    """Sum of the ``k`` first-ranked of ``vals[a:b]`` (Gaussians ``ids[a:b]``, any order), added in
    increasing Gaussian index so the result does not depend on the stored order.

    Ranking (the K-strongest rule, ``evaluate/knn.py``): larger ``|v|`` first, equal
    ``|v|`` by the lower Gaussian index. An entry is kept when fewer than ``k``
    entries rank before it (``keep[a:b]``: scratch flags); O(n^2) with n a
    voxel's coverage (tens).
    """
    for t in range(a, b):
        before = 0
        vt = abs(vals[t])
        for u in range(a, b):
            vu = abs(vals[u])
            if vu > vt or (vu == vt and ids[u] < ids[t]):
                before += 1
        keep[t] = before < k
    s = 0.0
    last = -1
    while True:  # the next kept entry by Gaussian index
        best = -1
        for t in range(a, b):
            if keep[t] and ids[t] > last and (best < 0 or ids[t] < ids[best]):
                best = t
        if best < 0:
            return s
        s += vals[best]
        last = ids[best]
