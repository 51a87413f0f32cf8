"""The error-bounded correction stage: what is left after the base (and the transform stage),
rounded to a grid of step ``D`` voxel by voxel, so every voxel ends within ``D / 2`` of its value.

``q = rint(r / D)`` per voxel (``r``: what the stage must add, original units),
rebuilt as ``q * D``. A block is coded slice by slice along Z, each slice in
two phases (even ``y + x``, then odd), each phase grouped by context
(``entropy.encode_groups``):

- phase A: ``min(7, bitlen(P))`` with ``P = 2 a(z-1, y, x) + a(z-1, y+-1, x) +
  a(z-1, y, x+-1)`` (``a`` = magnitude capped at ``entropy.ESCAPE``; zero on the
  first slice of a block);
- phase B: ``8 + 4 min(4, bitlen(N)) + min(3, bitlen(P))`` with ``N`` the sum over
  the four in-plane neighbours (all phase A).

then the phase's escape excesses and signs. One table of ``N_CORR_CTX``
codebook entries serves the whole layer. The numba kernel is
``_kernels.slice_contexts``; ``slice_contexts_reference`` is the plain definition.
"""

from __future__ import annotations

import numpy as np

from . import entropy
from .contexts import bitlen

N_CORR_CTX = 28


def quantize(r: np.ndarray, step: float) -> np.ndarray:
    """int64 indices ``rint(r / step)``."""
    return np.rint(np.asarray(r, np.float64) / step).astype(np.int64)


def slice_contexts_reference(q: np.ndarray, z: int, odd: int) -> np.ndarray:
    """Plain numpy definition of ``_kernels.slice_contexts``."""
    a = np.minimum(np.abs(q), entropy.ESCAPE).astype(np.int64)
    ny, nx = q.shape[1:]
    p = np.zeros((ny, nx), np.int64)
    if z > 0:
        prev = np.pad(a[z - 1], 1)
        p = 2 * prev[1:-1, 1:-1] + prev[:-2, 1:-1] + prev[2:, 1:-1] + prev[1:-1, :-2] + prev[1:-1, 2:]
    cur = np.pad(a[z], 1)
    n = cur[:-2, 1:-1] + cur[2:, 1:-1] + cur[1:-1, :-2] + cur[1:-1, 2:]
    yy, xx = np.indices((ny, nx))
    sel = ((yy + xx) & 1) == odd
    if not odd:
        return np.minimum(bitlen(p[sel]), 7)
    return 8 + 4 * np.minimum(bitlen(n[sel]), 4) + np.minimum(bitlen(p[sel]), 3)


def _phases(q: np.ndarray):
    """(symbols, contexts, excesses, signs) per slice phase, in coding order (encoder side)."""
    from . import _kernels as K

    for z in range(q.shape[0]):
        plane = np.ascontiguousarray(q[z: z + 1])
        for odd in (0, 1):
            vals = K.gather_phase(plane, odd)
            mag = np.abs(vals)
            yield (np.minimum(mag, entropy.ESCAPE), K.slice_contexts(q, z, odd),
                   mag[mag >= entropy.ESCAPE] - entropy.ESCAPE, (vals[vals != 0] < 0).astype(np.int64))


def count(q: np.ndarray, counts: np.ndarray | None = None):
    """Accumulate symbol counts per context ((N_CORR_CTX, ALPHABET)); returns (counts, bits of signs and
    escape excesses)."""
    counts = np.zeros((N_CORR_CTX, entropy.ALPHABET)) if counts is None else counts
    extra = 0.0
    size = N_CORR_CTX * entropy.ALPHABET
    for sym, cx, exc, sg in _phases(q):
        counts += np.bincount(cx * entropy.ALPHABET + sym, minlength=size).reshape(counts.shape)
        extra += len(sg) + float(np.sum(2 * bitlen(exc + 1) - 1))
    return counts, extra


def count_fast(q: np.ndarray, counts: np.ndarray | None = None):
    """``count`` in one compiled pass (the encoder's size estimate); same result."""
    from . import _kernels as K

    counts = np.zeros((N_CORR_CTX, entropy.ALPHABET), np.int64) if counts is None else counts
    extra = K.count_correction(np.ascontiguousarray(q), counts)
    return counts, extra


def encode(encoder, q: np.ndarray, entries: np.ndarray) -> None:
    """Append a block's indices to ``encoder`` (after the flag saying the stage is non-zero)."""
    for sym, cx, exc, sg in _phases(q):
        entropy.encode_groups(encoder, sym, cx, entries)
        entropy.encode_excess(encoder, exc)
        entropy.encode_bits(encoder, sg)


def decode(decoder, shape: tuple[int, int, int], entries: np.ndarray) -> np.ndarray:
    """Inverse of ``encode``: int64 indices of a block of ``shape`` (bounded work for any bytes)."""
    from . import _kernels as K

    q = np.zeros(shape, np.int64)
    for z in range(shape[0]):
        for odd in (0, 1):
            cx = K.slice_contexts(q, z, odd)
            mag = entropy.decode_signed(decoder, cx, entries)
            plane = q[z: z + 1]
            K.scatter_phase(plane, mag, odd)
    return q
