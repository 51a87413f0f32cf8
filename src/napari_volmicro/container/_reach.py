"""The reader's reach check, compiled: the 3-sigma box of a brick's Gaussians.

Same arithmetic as ``gaussians.quaternions_to_matrices`` followed by the
half-widths ``k sqrt(sum_j R[a, j]^2 s_j^2)`` (voxels, ZYX), one Gaussian at a
time without (N, 3, 3) temporaries: ~0.1 ms instead of ~2 ms for a
5,000-Gaussian brick. Imported on first use (it loads numba).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True, error_model="numpy")
def reach_bounds(centers, quats, scales, k):
    """float64 (3,) lo and hi of the union of ``centers +- k sigma`` boxes; (N, 3), (N, 4), (N, 3) inputs."""
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    for i in range(centers.shape[0]):
        w = np.float64(quats[i, 0])
        a = np.float64(quats[i, 1])
        b = np.float64(quats[i, 2])
        c = np.float64(quats[i, 3])
        n = math.sqrt(w * w + a * a + b * b + c * c)
        w /= n
        a /= n
        b /= n
        c /= n
        s0 = np.float64(scales[i, 0]) ** 2
        s1 = np.float64(scales[i, 1]) ** 2
        s2 = np.float64(scales[i, 2]) ** 2
        r0 = (1 - 2 * (b * b + c * c), 2 * (a * b - c * w), 2 * (a * c + b * w))
        r1 = (2 * (a * b + c * w), 1 - 2 * (a * a + c * c), 2 * (b * c - a * w))
        r2 = (2 * (a * c - b * w), 2 * (b * c + a * w), 1 - 2 * (a * a + b * b))
        e0 = k * math.sqrt(r0[0] * r0[0] * s0 + r0[1] * r0[1] * s1 + r0[2] * r0[2] * s2)
        e1 = k * math.sqrt(r1[0] * r1[0] * s0 + r1[1] * r1[1] * s1 + r1[2] * r1[2] * s2)
        e2 = k * math.sqrt(r2[0] * r2[0] * s0 + r2[1] * r2[1] * s1 + r2[2] * r2[2] * s2)
        for ax, e in ((0, e0), (1, e1), (2, e2)):
            x = np.float64(centers[i, ax])
            if x - e < lo[ax]:
                lo[ax] = x - e
            if x + e > hi[ax]:
                hi[ax] = x + e
    return lo, hi


@nb.njit(cache=True, nogil=True)
def unpack_bits(data, n, width):
    """``n`` values of ``width`` bits (LSB first, ``width <= 16``) from the uint8 array ``data``
    (at least ceil(n * width / 8) bytes) as int64: the format-2 plane layout."""
    out = np.empty(n, np.int64)
    mask = (1 << width) - 1
    nbytes = data.shape[0]
    for i in range(n):
        pos = i * width
        byte = pos >> 3
        word = np.int64(data[byte]) if byte < nbytes else np.int64(0)
        if byte + 1 < nbytes:
            word |= np.int64(data[byte + 1]) << 8
        if byte + 2 < nbytes:
            word |= np.int64(data[byte + 2]) << 16
        out[i] = (word >> (pos & 7)) & mask
    return out
