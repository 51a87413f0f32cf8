"""A robust estimate of a volume's noise level, for ``--max-error 1.5sigma``.

``noise_sigma(volume)``: the median absolute value of the finest diagonal
Haar detail (the sum of each 2 x 2 x 2 cube with alternating signs, divided
by sqrt(8): white noise of standard deviation s gives details of standard
deviation s, smooth structure gives almost none), times 1.4826 (the MAD of a
normal distribution). Volumes thinner than 2 along an axis use the 2D
detail of the other two. Where more than half of the details are exactly
zero (a background set to zero, as in traced-neuron volumes), the median is
taken over the non-zero details, i.e. the noise of the voxels that vary.
At most ``MAX_SAMPLES`` cubes are used (an even sub-grid), so the cost is
bounded on any volume.
"""

from __future__ import annotations

import math

import numpy as np

MAX_SAMPLES = 4_000_000
MAD_TO_SIGMA = 1.482602218505602


def haar_details(volume: np.ndarray) -> np.ndarray:
    """Finest diagonal Haar details of ``volume`` (float64, flattened), over a bounded sub-grid of cubes."""
    v = np.asarray(volume)
    axes = [a for a in range(3) if v.shape[a] >= 2]
    cubes = 1
    for a in axes:
        cubes *= v.shape[a] // 2
    stride = max(1, math.ceil((cubes / MAX_SAMPLES) ** (1.0 / max(1, len(axes)))))
    idx = []
    for a in range(3):
        if a in axes:
            n = v.shape[a] // 2
            starts = np.arange(0, n, stride) * 2
            idx.append(starts)
        else:
            idx.append(np.zeros(1, np.int64))
    det = np.zeros([len(i) for i in idx], np.float64)
    offsets = [(0, 1) if a in axes else (0,) for a in range(3)]
    for dz in offsets[0]:
        for dy in offsets[1]:
            for dx in offsets[2]:
                sign = (-1) ** (dz + dy + dx)
                det += sign * v[np.ix_(idx[0] + dz, idx[1] + dy, idx[2] + dx)].astype(np.float64)
    return det.ravel() / math.sqrt(2 ** len(axes))


def noise_sigma(volume: np.ndarray) -> float:
    """Estimated noise standard deviation of ``volume`` in its own units (0.0 for a constant volume)."""
    d = np.abs(haar_details(volume))
    if d.size == 0:
        return 0.0
    if np.count_nonzero(d) * 2 < d.size:
        d = d[d != 0]
        if d.size == 0:
            return 0.0
    return float(MAD_TO_SIGMA * np.median(d))
