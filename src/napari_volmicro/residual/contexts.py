"""Coding contexts of quantised coefficients, from what a decoder already has.

A band (or a block of quantised voxels) is coded in two phases: first the
voxels whose index sum ``z + y + x`` is even (phase A), then the odd ones
(phase B). A phase-A symbol is coded knowing its *parent* activity ``P`` (the
coarser band of the same orientation, or the low band) and its *sibling*
activity ``S`` (bands of the same level coded before it); a phase-B symbol
also knows its six face neighbours, which are all phase A. Activity is the
magnitude capped at ``entropy.ESCAPE``. Contexts are small integers computed
with integer operations only (no float rounding can make a decoder disagree):

- phase A: ``bitlen(2 P + S)`` capped at ``N_CTX_A - 1``;
- phase B: ``N_CTX_A + 3 * min(4, bitlen(N)) + min(2, bitlen(2 P + S))``
  with ``N`` the sum of the six neighbours' activities.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .entropy import ESCAPE

N_CTX_A = 7
N_CTX_B = 15
N_CTX = N_CTX_A + N_CTX_B


def bitlen(v: np.ndarray) -> np.ndarray:
    """Bit length of non-negative int64 values (0 -> 0)."""
    return np.searchsorted(1 << np.arange(40, dtype=np.int64), v, side="right").astype(np.int64)


def activity(q: np.ndarray) -> np.ndarray:
    return np.minimum(np.abs(q), ESCAPE).astype(np.int64)


@lru_cache(maxsize=256)
def parity(shape: tuple[int, int, int]) -> np.ndarray:
    """bool array of ``shape``: True at phase-B voxels (odd ``z + y + x``)."""
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    out = ((z + y + x) & 1).astype(bool)
    out.flags.writeable = False
    return out


def resample_nearest(act: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """``act`` mapped onto ``shape`` by index ``i * n_src // n_dst`` per axis (parents onto children)."""
    if act.shape == tuple(shape):
        return act
    idx = [np.minimum((np.arange(n) * m) // n, m - 1) for n, m in zip(shape, act.shape)]
    return act[np.ix_(*idx)]


def neighbour_sum(act: np.ndarray) -> np.ndarray:
    """Sum of the six face neighbours of every voxel (zero outside), int64."""
    p = np.pad(act, 1)
    return (p[:-2, 1:-1, 1:-1] + p[2:, 1:-1, 1:-1] + p[1:-1, :-2, 1:-1] + p[1:-1, 2:, 1:-1]
            + p[1:-1, 1:-1, :-2] + p[1:-1, 1:-1, 2:])


def context_a(ps: np.ndarray) -> np.ndarray:
    """Phase-A contexts from ``2 P + S`` (int64)."""
    return np.minimum(bitlen(ps), N_CTX_A - 1)


def context_b(n: np.ndarray, ps: np.ndarray) -> np.ndarray:
    """Phase-B contexts from the neighbour sum ``n`` and ``2 P + S``."""
    return N_CTX_A + 3 * np.minimum(bitlen(n), 4) + np.minimum(bitlen(ps), 2)
