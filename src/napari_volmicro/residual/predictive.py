"""The predictive form of the error-bounded correction stage: each voxel is predicted from voxels
already decoded (hierarchical interpolation, as SZ3 does) and only the rounded prediction error is coded.

On textured, noisy tissue the residual after a smooth base stays correlated
from voxel to voxel; predicting it from decoded neighbours takes that out
before rounding. Per block (ZYX shape ``n``): the voxels on the grid of
stride ``S`` (the largest power of two below ``max(n)``) are coded first
(predicted as 0); then for ``s = S, S/2, ..., 2`` with ``h = s / 2`` three
passes fill the grid of stride ``h``: along Z (``z`` an odd multiple of
``h``, ``y`` and ``x`` multiples of ``s``), along Y (``z`` a multiple of
``h``, ``y`` an odd multiple of ``h``, ``x`` a multiple of ``s``), along X
(``z``, ``y`` multiples of ``h``, ``x`` odd). A voxel is predicted along the
pass's axis from the decoded voxels at ``-3h, -h, +h, +3h``: cubic
``(-a3 + 9 a1 + 9 b1 - b3) / 16`` when all four exist in the block, linear
``(a1 + b1) / 2`` when ``+h`` exists, else ``a1``. The index is
``q = rint((r - p) / D)`` and the voxel is rebuilt as ``p + q D`` (float64,
the same operations at both ends), so it ends within ``D / 2`` of ``r``.

Contexts (``N_PRED_CTX``): ``18 level + 6 axis + min(5, bitlen(a(-h) + a(+h)))``
with ``a`` the capped magnitude of the two neighbours' indices, ``level``
0..3 (3 = the finest grid, 2 the next, ...; the first grid is context 0)
and ``axis`` the pass's (voxels are often coarser along Z, so its
predictions are worse).
"""

from __future__ import annotations

import numpy as np

from . import entropy
from .contexts import bitlen

N_PRED_CTX = 72


def _first_stride(shape) -> int:
    s = 1
    while 2 * s < max(shape):
        s *= 2
    return s


def passes(shape) -> list[tuple[int, int, int, int]]:
    """The coding passes of a block of ``shape`` after the first grid: (stride s, axis, level, h),
    level 3 for ``s = 2`` (the finest), 2 for 4, 1 for 8, 0 above."""
    out = []
    s = _first_stride(shape)
    while s > 1:
        level = max(0, 4 - (s.bit_length() - 1))
        for axis in range(3):
            out.append((s, axis, level, s // 2))
        s //= 2
    return out


def _pass_index(shape, s: int, axis: int, h: int):
    """Index ranges (one per axis) of the voxels a pass codes."""
    idx = []
    for a, n in enumerate(shape):
        if a < axis:
            idx.append(np.arange(0, n, h))
        elif a == axis:
            idx.append(np.arange(h, n, s))
        else:
            idx.append(np.arange(0, n, s))
    return idx


def _take(arr: np.ndarray, idx, axis: int, along: np.ndarray) -> np.ndarray:
    sel = list(idx)
    sel[axis] = along
    return arr[np.ix_(*sel)]


def _predict(rh: np.ndarray, qa: np.ndarray, idx, axis: int, h: int, level: int):
    """(prediction, contexts) of a pass from the decoded values ``rh`` and capped index magnitudes ``qa``."""
    n = rh.shape[axis]
    pos = idx[axis]
    shape = [1, 1, 1]
    shape[axis] = len(pos)
    has_b1 = (pos + h < n).reshape(shape)
    has_cubic = ((pos - 3 * h >= 0) & (pos + 3 * h < n)).reshape(shape)
    a1 = _take(rh, idx, axis, pos - h)
    b1 = _take(rh, idx, axis, np.minimum(pos + h, n - 1))
    a3 = _take(rh, idx, axis, np.maximum(pos - 3 * h, 0))
    b3 = _take(rh, idx, axis, np.minimum(pos + 3 * h, n - 1))
    pred = np.where(has_cubic, (-a3 + 9.0 * a1 + 9.0 * b1 - b3) / 16.0, np.where(has_b1, (a1 + b1) / 2.0, a1))
    act = _take(qa, idx, axis, pos - h) + np.where(has_b1, _take(qa, idx, axis, np.minimum(pos + h, n - 1)), 0)
    return pred, 18 * level + 6 * axis + np.minimum(bitlen(act), 5)


def quantize(r: np.ndarray, step: float) -> tuple[list, np.ndarray]:
    """The passes of a block: ([(symbols, contexts, excesses, signs), ...] in coding order, the rebuilt
    residual ``p + q D`` (float64))."""
    r = np.asarray(r, np.float64)
    rh = np.zeros(r.shape, np.float64)
    qa = np.zeros(r.shape, np.int64)
    items = []
    s0 = _first_stride(r.shape)
    first = tuple(np.arange(0, n, s0) for n in r.shape)
    q = np.rint(r[np.ix_(*first)] / step).astype(np.int64)
    rh[np.ix_(*first)] = q * step
    qa[np.ix_(*first)] = np.minimum(np.abs(q), entropy.ESCAPE)
    items.append(_item(q, np.zeros(q.shape, np.int64)))
    for s, axis, level, h in passes(r.shape):
        idx = _pass_index(r.shape, s, axis, h)
        if any(len(i) == 0 for i in idx):
            continue
        pred, cx = _predict(rh, qa, idx, axis, h, level)
        q = np.rint((r[np.ix_(*idx)] - pred) / step).astype(np.int64)
        rh[np.ix_(*idx)] = pred + q * step
        qa[np.ix_(*idx)] = np.minimum(np.abs(q), entropy.ESCAPE)
        items.append(_item(q, cx))
    return items, rh


def _item(q: np.ndarray, cx: np.ndarray):
    q = q.ravel()
    mag = np.abs(q)
    return (np.minimum(mag, entropy.ESCAPE), cx.ravel(), mag[mag >= entropy.ESCAPE] - entropy.ESCAPE,
            (q[q != 0] < 0).astype(np.int64))


def max_index(items) -> int:
    """Largest index magnitude of a block's passes."""
    return max((int(sym.max()) + (int(exc.max()) if exc.size else 0) for sym, _, exc, _ in items if sym.size),
               default=0)


def count(items, counts: np.ndarray | None = None):
    """Accumulate (context, symbol) counts of a block's passes; returns (counts, bits of signs and excesses)."""
    counts = np.zeros((N_PRED_CTX, entropy.ALPHABET), np.int64) if counts is None else counts
    extra = 0.0
    size = N_PRED_CTX * entropy.ALPHABET
    for sym, cx, exc, sg in items:
        counts += np.bincount(cx * entropy.ALPHABET + sym, minlength=size).reshape(counts.shape)
        extra += len(sg) + float(np.sum(2 * bitlen(exc + 1) - 1))
    return counts, extra


def encode(encoder, items, entries: np.ndarray) -> None:
    for sym, cx, exc, sg in items:
        entropy.encode_groups(encoder, sym, cx, entries)
        entropy.encode_excess(encoder, exc)
        entropy.encode_bits(encoder, sg)


def decode(decoder, shape, step: float, entries: np.ndarray) -> np.ndarray:
    """Inverse of ``encode``: the rebuilt residual of a block of ``shape`` (float64); bounded work for any bytes."""
    rh = np.zeros(shape, np.float64)
    qa = np.zeros(shape, np.int64)
    s0 = _first_stride(shape)
    first = tuple(np.arange(0, n, s0) for n in shape)
    q = entropy.decode_signed(decoder, np.zeros(int(np.prod([len(i) for i in first])), np.int64), entries)
    q = q.reshape([len(i) for i in first])
    rh[np.ix_(*first)] = q * step
    qa[np.ix_(*first)] = np.minimum(np.abs(q), entropy.ESCAPE)
    for s, axis, level, h in passes(shape):
        idx = _pass_index(shape, s, axis, h)
        if any(len(i) == 0 for i in idx):
            continue
        pred, cx = _predict(rh, qa, idx, axis, h, level)
        q = entropy.decode_signed(decoder, cx.ravel(), entries).reshape(pred.shape)
        rh[np.ix_(*idx)] = pred + q * step
        qa[np.ix_(*idx)] = np.minimum(np.abs(q), entropy.ESCAPE)
    return rh
