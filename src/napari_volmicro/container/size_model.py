"""The one size model of the budget: how many bytes N Gaussians will take, before they exist.

Exact sizes come from ``file_size`` / ``codec.brick_payload_size`` (they quantise and encode
the model). Before training, the encoder (``encode.budget``) and the bricked planner need the
reverse: how many Gaussians a byte budget holds. This module is the only place that estimate
lives, per format version:

- version 1: exactly 22 bytes per Gaussian (``payload_v1.BYTES_PER_GAUSSIAN``);
- version 2: the position bits of a box spanning the brick plus typical widths of the other
  planes (63 bits, measured on trained models), and 33 descriptor bytes per brick;
- version 3: Morton-gap coded positions cost about ``log2(V 16^3 / N)`` bits for N
  Gaussians in V voxels (the gaps of N sorted points on a grid of ``V 16^3`` cells; clustered
  trained models take up to a bit less), plus ``V3_OTHER_BITS`` for scales, amplitude and
  rotation (37-40 measured on trained and random models), and the payload head per brick.

The estimate errs towards more Gaussians (a few percent): the encoder trains that many and the
final prune (``encode.budget.fit_budget``) removes the least massive until the exact size fits.
"""

from __future__ import annotations

import math

import numpy as np

from . import payload_v1, payload_v2, payload_v3
from .layout import FORMAT_VERSION

#: version 2: typical bit widths of the planes other than positions (scales 3 x 8, quaternion
#: index 2 + 3 x 9, amplitude 10), measured on models trained at 0.073-0.3 bpp
V2_OTHER_BITS = 3 * 8 + 2 + 3 * 9 + 10
#: version 3: bits of scales, amplitude and rotation per Gaussian (37-40 measured; below the low end, so
#: the estimate errs towards more Gaussians: a trained model too small for its budget cannot grow at
#: the end, one a few percent too large is pruned)
V3_OTHER_BITS = 36.0
#: version 3: position bits beyond log2(cells / N) (-1 on clustered trained models to +2.3 on uniform
#: random ones)
V3_POSITION_EXTRA_BITS = 0.0
#: version 3: bytes per brick beyond the Gaussians (payload head, the entropy coder's last word)
V3_BRICK_BYTES = payload_v3.HEADER_SIZE + 4


def brick_overhead(version: int = FORMAT_VERSION) -> int:
    """Payload bytes of a non-empty brick that do not grow with its Gaussians."""
    return {1: 0, 2: payload_v2.HEADER_SIZE}.get(version, V3_BRICK_BYTES)


def bits_per_gaussian(n: float, extent, version: int = FORMAT_VERSION) -> float:
    """Estimated payload bits per Gaussian for ``n`` Gaussians in one brick spanning ``extent``
    voxels (ZYX)."""
    if version == 1:
        return 8.0 * payload_v1.BYTES_PER_GAUSSIAN
    if version == 2:
        levels = payload_v2.position_levels(np.zeros(3, np.float32), np.asarray(extent, np.float32) - 1)
        return float(sum(int(v).bit_length() for v in levels) + V2_OTHER_BITS)
    cells = float(np.prod(np.asarray(extent, np.float64))) * 2.0 ** (3 * payload_v3.POS_FRAC_BITS)
    return max(1.0, math.log2(cells / max(n, 1.0))) + V3_POSITION_EXTRA_BITS + V3_OTHER_BITS


def payload_bytes(n: int, extent, version: int = FORMAT_VERSION) -> float:
    """Estimated payload bytes of one brick of ``n`` Gaussians spanning ``extent`` voxels."""
    if n <= 0:
        return 0.0
    return brick_overhead(version) + n * bits_per_gaussian(n, extent, version) / 8


def gaussians_for_payload(nbytes: float, extent, version: int = FORMAT_VERSION) -> int:
    """About the most Gaussians one brick spanning ``extent`` voxels holds in ``nbytes`` payload bytes
    (0 if not even the brick overhead fits)."""
    room = float(nbytes) - brick_overhead(version)
    if room <= 0:
        return 0
    n = room * 8 / 64.0
    for _ in range(8):  # bits per Gaussian falls slowly with n: a fixed point in a few steps
        n = room * 8 / bits_per_gaussian(n, extent, version)
    return int(max(0, math.floor(n)))
