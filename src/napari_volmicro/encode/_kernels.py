"""Numba kernels: exact 3-sigma Gaussian footprints on a strided voxel lattice.

A *lattice* is the voxel set ``offset[a] + stride[a] * i`` (``i < shape[a]``) on
each axis (ZYX, voxel indices of the full volume). Training samples one such
lattice per step (a random offset of a coarse stride, or the full grid), so
every sampled voxel sees every Gaussian whose ellipsoid ``d^2 <= 9`` covers it,
exactly as the dense decoder does.

Gaussians are given by centre (N, 3) voxels, the six distinct entries of their
precision matrix ``(Pzz, Pyy, Pxx, Pzy, Pzx, Pyx)`` (N, 6) in voxel^-2, and the
half-widths of their axis-aligned 3-sigma box (N, 3) voxels. For each lattice
row (fixed z, y) the x-span inside the ellipsoid is solved exactly, so no
sample outside the cutoff is evaluated.

- ``splat_forward``: Gaussians are split into ``n_chunks`` contiguous chunks,
  each summed into its own buffer (parallel over chunks), buffers added in a
  fixed order: deterministic, no atomics.
- ``splat_backward``: for each Gaussian (parallel, independent), the 10 sums a
  gradient needs against the upstream gradient ``r``: sum r g, sum r g d (3),
  sum r g d d^T (6), with ``g = exp(-d^2/2)``, ``d = x - mu``.
"""

from __future__ import annotations

import math
import os

# Idle OpenMP workers sleep instead of spinning: on a small CPU shared with
# other work, spinning workers starve each other (measured 2x slower under load).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba as nb  # noqa: E402
import numpy as np  # noqa: E402

from .. import _footprint as F  # noqa: E402

CUTOFF_D2 = F.CUTOFF_D2
#: fixed number of partial buffers/sums, so results do not depend on the thread count
N_CHUNKS = 4

# The per-row math is shared with the GPU kernels (``_footprint.py``).
_inline = nb.njit(cache=True, inline="always")
_axis_range = _inline(F.axis_range)
_row_coeffs = _inline(F.row_coeffs)
_row_span = _inline(F.row_span)
_row_d2 = _inline(F.row_d2)
_row_start = _inline(F.row_start)
_row_moments = _inline(F.row_moments)


@nb.njit(cache=True, nogil=True)
def _splat_one(i, centers, prec, amps, half, off, stride, shape, out, za, zb):
    """Add Gaussian ``i`` to the lattice planes ``za <= iz < zb`` of ``out``."""
    cz, cy, cx = centers[i, 0], centers[i, 1], centers[i, 2]
    pzz, pyy, pxx, pzy, pzx, pyx = prec[i, 0], prec[i, 1], prec[i, 2], prec[i, 3], prec[i, 4], prec[i, 5]
    w = amps[i]
    if w == 0.0:
        return
    z0, z1 = _axis_range(cz, half[i, 0], off[0], stride[0], shape[0])
    z0 = max(z0, za)
    z1 = min(z1, zb - 1)
    if z0 > z1:
        return
    y0, y1 = _axis_range(cy, half[i, 1], off[1], stride[1], shape[1])
    ny, nx = shape[1], shape[2]
    sx = stride[2]
    q = math.exp(-pxx * sx * sx)
    for iz in range(z0, z1 + 1):
        dz = off[0] + stride[0] * iz - cz
        for iy in range(y0, y1 + 1):
            dy = off[1] + stride[1] * iy - cy
            b, c = _row_coeffs(pzz, pyy, pzy, pzx, pyx, dz, dy)
            ix0, ix1 = _row_span(b, c, pxx, cx, off[2], sx, nx)
            if ix0 > ix1:
                continue
            base = (iz * ny + iy) * nx
            cst = c + CUTOFF_D2
            g, ratio = _row_start(cst, b, pxx, off[2] + sx * ix0 - cx, sx)
            for ix in range(ix0, ix1 + 1):
                dx = off[2] + sx * ix - cx
                d2 = _row_d2(cst, b, pxx, dx)
                if d2 <= CUTOFF_D2:
                    out[base + ix] += w * g
                g *= ratio
                ratio *= q

@nb.njit(parallel=True, cache=True, nogil=True)
def splat_forward(centers, prec, amps, half, off, stride, shape, n_chunks):
    """Sum of Gaussians on the lattice, flattened C order (float32, length prod(shape)).

    The lattice's Z planes are cut into slabs (``8 * n_chunks`` at most), one
    parallel task each; a slab adds every Gaussian that reaches it, in index
    order, to its own planes only. One output buffer, no atomics, and each
    voxel's sum has the same order whatever the slab or thread count.
    """
    m = shape[0] * shape[1] * shape[2]
    out = np.zeros(m, np.float32)
    n = centers.shape[0]
    n_slabs = max(1, min(shape[0], 8 * n_chunks))
    for k in nb.prange(n_slabs):
        za = (shape[0] * k) // n_slabs
        zb = (shape[0] * (k + 1)) // n_slabs
        for i in range(n):
            _splat_one(i, centers, prec, amps, half, off, stride, shape, out, za, zb)
    return out


@nb.njit(cache=True, nogil=True)
def _grad_one(i, centers, prec, half, off, stride, shape, r, acc):
    """``acc[i]`` = Gaussian ``i``'s ten sums (see ``splat_backward``).

    Within a row dz and dy are fixed, so the row only accumulates sum r g,
    sum r g dx and sum r g dx^2; the ten sums follow from those three.
    """
    cz, cy, cx = centers[i, 0], centers[i, 1], centers[i, 2]
    pzz, pyy, pxx, pzy, pzx, pyx = prec[i, 0], prec[i, 1], prec[i, 2], prec[i, 3], prec[i, 4], prec[i, 5]
    z0, z1 = _axis_range(cz, half[i, 0], off[0], stride[0], shape[0])
    y0, y1 = _axis_range(cy, half[i, 1], off[1], stride[1], shape[1])
    ny, nx = shape[1], shape[2]
    sx = stride[2]
    q = math.exp(-pxx * sx * sx)
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = s8 = s9 = 0.0
    for iz in range(z0, z1 + 1):
        dz = off[0] + stride[0] * iz - cz
        for iy in range(y0, y1 + 1):
            dy = off[1] + stride[1] * iy - cy
            b, c = _row_coeffs(pzz, pyy, pzy, pzx, pyx, dz, dy)
            ix0, ix1 = _row_span(b, c, pxx, cx, off[2], sx, nx)
            if ix0 > ix1:
                continue
            base = (iz * ny + iy) * nx
            cst = c + CUTOFF_D2
            g, ratio = _row_start(cst, b, pxx, off[2] + sx * ix0 - cx, sx)
            r0 = r1 = r2 = 0.0
            for ix in range(ix0, ix1 + 1):
                dx = off[2] + sx * ix - cx
                d2 = _row_d2(cst, b, pxx, dx)
                if d2 <= CUTOFF_D2:
                    rg = r[base + ix] * g
                    r0 += rg
                    r1 += rg * dx
                    r2 += rg * dx * dx
                g *= ratio
                ratio *= q
            m = _row_moments(r0, r1, r2, dz, dy)
            s0 += m[0]
            s1 += m[1]
            s2 += m[2]
            s3 += m[3]
            s4 += m[4]
            s5 += m[5]
            s6 += m[6]
            s7 += m[7]
            s8 += m[8]
            s9 += m[9]
    acc[i, 0] = s0
    acc[i, 1] = s1
    acc[i, 2] = s2
    acc[i, 3] = s3
    acc[i, 4] = s4
    acc[i, 5] = s5
    acc[i, 6] = s6
    acc[i, 7] = s7
    acc[i, 8] = s8
    acc[i, 9] = s9


@nb.njit(parallel=True, cache=True, nogil=True)
def splat_backward(centers, prec, amps, half, off, stride, shape, r):
    """Per-Gaussian sums against the upstream gradient ``r`` (flattened lattice).

    Returns (N, 10) float64: [sum r g, sum r g dz, dy, dx,
    sum r g dz^2, dy^2, dx^2, dz dy, dz dx, dy dx]. Gaussians are dealt to
    64 interleaved groups (``i = k, k + 64, ...``) so big and small ones,
    wherever they sit in the list, spread evenly over the threads.
    """
    n = centers.shape[0]
    acc = np.zeros((n, 10), np.float64)
    groups = min(64, n)
    for k in nb.prange(groups):
        for i in range(k, n, groups):
            _grad_one(i, centers, prec, half, off, stride, shape, r, acc)
    return acc


@nb.njit(parallel=True, cache=True, nogil=True)
def weighted_residual(pred, bg, target, weight, n_chunks):
    """Fused loss pass over a lattice (all flat, float32).

    d = pred + bg - target; returns (sum weight d^2, sum d^2, r = 2 weight d, d).
    Chunked partial sums added in a fixed order (deterministic).
    """
    m = pred.shape[0]
    r = np.empty(m, np.float32)
    d_out = np.empty(m, np.float32)
    lw = np.zeros(n_chunks, np.float64)
    l2 = np.zeros(n_chunks, np.float64)
    for k in nb.prange(n_chunks):
        a = (m * k) // n_chunks
        b = (m * (k + 1)) // n_chunks
        sw = 0.0
        s2 = 0.0
        for j in range(a, b):
            d = pred[j] + bg[j] - target[j]
            dd = d * d
            s2 += dd
            sw += weight[j] * dd
            r[j] = 2.0 * weight[j] * d
            d_out[j] = d
        lw[k] = sw
        l2[k] = s2
    return lw.sum(), l2.sum(), r, d_out
