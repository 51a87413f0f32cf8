"""The transform coder of the enhancement layer: one block of residual voxels <-> bytes.

A block (ZYX, float, original units) goes through the 3D CDF 9/7 wavelet
(``wavelet.py``, ``levels`` levels). Every band gets the step ``step / gain``
(``wavelet.band_gains``), so a unit of quantisation error costs the same in
the voxels whichever band it is in. Detail coefficients are quantised with a
dead zone: ``|q| = floor(|c| / s + 1 - tau)`` (``tau`` = ``DEADZONE``; 0.5
would be plain rounding, larger values zero more small coefficients); the low
band is rounded. A coefficient is rebuilt at ``sign(q) (|q| + nu) s`` where
``nu`` (one per band class, chosen by the encoder as the mean offset of the
coefficients in their bins, stored in the header) moves it towards where the
values actually lie.

Symbols: per band (coarsest first, then orientations 1..7 of each level), a
zero-band flag, then the magnitudes of phase A and of phase B
(``contexts.py``), each phase followed by its escape excesses and its signs.
Each (band class, context) has a codebook entry chosen for the whole layer
(``entropy.choose``); the entries live in the layer's header.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from . import contexts as ctx
from . import entropy, wavelet

#: default dead-zone parameter of the detail bands (``floor(|c| / s + 1 - DEADZONE)``)
DEADZONE = 0.62
#: band classes: 0 = low band, then 1 + 3 * (min(level, 3) - 1) + (number of high axes - 1)
N_CLASSES = 10


def band_class(level: int, orient: int) -> int:
    if level == 0:
        return 0
    n_high = bin(orient).count("1")
    return 1 + 3 * (min(level, 3) - 1) + (n_high - 1)


@dataclass(frozen=True)
class Band:
    level: int
    slices: tuple[slice, slice, slice]
    orient: int
    cls: int
    gain: float
    parent: int  # index of the parent band (-1: none)
    siblings: tuple[int, ...]  # earlier bands of the same level

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(s.stop - s.start for s in self.slices)


@lru_cache(maxsize=64)
def bands(shape: tuple[int, int, int], levels) -> tuple[Band, ...]:
    """The bands of a block of ``shape``, in coding order, with their parents and siblings."""
    boxes = wavelet.band_boxes(shape, levels)
    gains = wavelet.band_gains(shape, levels)
    coarsest = max((lev for lev, _, _ in boxes), default=0)
    out = []
    for i, ((lev, sl, orient), g) in enumerate(zip(boxes, gains)):
        parent = -1
        if lev:
            for j, (lev2, _, o2) in enumerate(boxes[:i]):
                if (lev2 == lev + 1 and o2 == orient) or (lev == coarsest and lev2 == 0):
                    parent = j
        sib = tuple(j for j, (lev2, _, _) in enumerate(boxes[:i]) if lev and lev2 == lev)
        out.append(Band(lev, sl, orient, band_class(lev, orient), g, parent, sib))
    return tuple(out)


def quantize(coeffs: np.ndarray, step: float, levels, deadzone: float = DEADZONE) -> np.ndarray:
    """Wavelet coefficients of one block -> int64 indices (same shape)."""
    q = np.empty(coeffs.shape, np.int64)
    for b in bands(coeffs.shape, levels):
        s = step / b.gain
        c = coeffs[b.slices]
        if b.level == 0:
            q[b.slices] = np.rint(c / s)
        else:
            mag = np.floor(np.abs(c) / s + (1.0 - deadzone))
            q[b.slices] = np.where(c < 0, -mag, mag)
    return q


def bin_offsets(coeffs: np.ndarray, q: np.ndarray, step: float, levels, sums=None):
    """Accumulate, per band class, (sum of |c| / s - |q|, count) over the non-zero indices."""
    sums = np.zeros((N_CLASSES, 2)) if sums is None else sums
    for b in bands(coeffs.shape, levels):
        if b.level == 0:
            continue
        qb = np.abs(q[b.slices])
        nz = qb > 0
        if nz.any():
            s = step / b.gain
            sums[b.cls, 0] += float((np.abs(coeffs[b.slices][nz]) / s - qb[nz]).sum())
            sums[b.cls, 1] += int(nz.sum())
    return sums


def dequantize_reference(q: np.ndarray, step: float, levels, nu: np.ndarray) -> np.ndarray:
    """Indices -> coefficients (float64); ``nu``: per band class offset within the bin (fraction of the
    step). The plain definition of ``dequantize``."""
    c = np.zeros(q.shape, np.float64)
    for b in bands(q.shape, levels):
        s = step / b.gain
        qb = q[b.slices]
        if b.level == 0:
            c[b.slices] = qb * s
        else:
            c[b.slices] = qb * s + np.sign(qb) * (nu[b.cls] * s)
    return c


def dequantize(q: np.ndarray, step: float, levels, nu: np.ndarray) -> np.ndarray:
    """``dequantize_reference`` in one compiled pass (same values, bit for bit)."""
    from . import _kernels as K

    out = np.empty(q.shape, np.float64)
    gains = np.array([b.gain for b in bands(q.shape, levels)], np.float64)
    K.dequantize_block(np.ascontiguousarray(q, np.int64), band_table(q.shape, levels), gains, float(step),
                       np.asarray(nu, np.float64), out)
    return out


# -- symbols ------------------------------------------------------------------------------


def _parent_sibling(qbands: list, b: Band) -> np.ndarray:
    """``2 P + S`` of every coefficient of band ``b`` from the already coded bands ``qbands``."""
    from . import _kernels as K

    ps = np.zeros(b.shape, np.int64)
    if b.parent >= 0:
        K.add_resampled(ps, qbands[b.parent], 2)
    for j in b.siblings:
        K.add_resampled(ps, qbands[j], 1)
    return ps


def phases(q: np.ndarray, levels):
    """What one block codes, in order: (band flags (0/1 per band), [(cls, symbols, contexts,
    excesses, signs) per phase of each non-zero band]). Used by the encoder for counting and
    coding; ``decode_block`` mirrors it."""
    from . import _kernels as K

    bl = bands(q.shape, levels)
    qbands = [np.ascontiguousarray(q[b.slices]) for b in bl]
    flags = np.array([bool(np.any(qb)) for qb in qbands], np.int64)
    out = []
    for i, b in enumerate(bl):
        if not flags[i]:
            continue
        ps = _parent_sibling(qbands, b)
        for odd in (0, 1):
            vals = K.gather_phase(qbands[i], odd)
            mag = np.abs(vals)
            sym = np.minimum(mag, entropy.ESCAPE)
            cx = K.phase_contexts(ps, qbands[i], odd)
            out.append((b.cls, sym, cx, mag[mag >= entropy.ESCAPE] - entropy.ESCAPE,
                        (vals[vals != 0] < 0).astype(np.int64)))
    return flags, out


@lru_cache(maxsize=64)
def band_table(shape: tuple[int, int, int], levels) -> np.ndarray:
    """The bands of ``bands(shape, levels)`` as an int64 table for ``_kernels.count_block``: z0 z1 y0 y1
    x0 x1, class, parent (-1: none), up to 7 siblings (-1 padded)."""
    from ._kernels import BAND_COLS

    bl = bands(shape, levels)
    t = np.full((len(bl), BAND_COLS), -1, np.int64)
    for i, b in enumerate(bl):
        t[i, :6] = [b.slices[0].start, b.slices[0].stop, b.slices[1].start, b.slices[1].stop,
                    b.slices[2].start, b.slices[2].stop]
        t[i, 6] = b.cls
        t[i, 7] = b.parent
        t[i, 8: 8 + len(b.siblings)] = b.siblings
    t.flags.writeable = False
    return t


def count_fast(q: np.ndarray, levels, counts: np.ndarray | None = None):
    """``count`` in one compiled pass (the encoder's rate search); same result."""
    from . import _kernels as K

    counts = np.zeros((N_CLASSES, ctx.N_CTX, entropy.ALPHABET), np.int64) if counts is None else counts
    extra = K.count_block(np.ascontiguousarray(q), band_table(q.shape, levels), counts)
    return counts, extra


def count(q: np.ndarray, levels, counts: np.ndarray | None = None):
    """Accumulate symbol counts per (band class, context) into ``counts`` (N_CLASSES, N_CTX, ALPHABET);
    returns (counts, bits outside the tables: flags, signs and escape excesses). The plain definition
    (from ``phases``, what the coder codes); ``count_fast`` is the compiled one."""
    size = ctx.N_CTX * entropy.ALPHABET
    counts = np.zeros((N_CLASSES, ctx.N_CTX, entropy.ALPHABET)) if counts is None else counts
    flags, items = phases(q, levels)
    extra = float(len(flags))
    for cls, sym, cx, exc, sg in items:
        counts[cls] += np.bincount(cx * entropy.ALPHABET + sym, minlength=size).reshape(counts.shape[1:])
        extra += len(sg) + float(np.sum(2 * ctx.bitlen(exc + 1) - 1))
    return counts, extra


def encode_into(encoder, q: np.ndarray, levels, entries: np.ndarray) -> None:
    """Append one block's indices (not all zero) to ``encoder``. ``entries``: (N_CLASSES, N_CTX)
    codebook entries."""
    flags, items = phases(q, levels)
    entropy.encode_bits(encoder, flags)
    for cls, sym, cx, exc, sg in items:
        entropy.encode_groups(encoder, sym, cx, entries[cls])
        entropy.encode_excess(encoder, exc)
        entropy.encode_bits(encoder, sg)


def decode_from(decoder, shape: tuple[int, int, int], levels, entries: np.ndarray) -> np.ndarray:
    """Inverse of ``encode_into``: int64 indices of a block of ``shape``. Any bytes decode to some
    indices in bounded time (the symbol count is fixed by ``shape``)."""
    from . import _kernels as K

    q = np.zeros(shape, np.int64)
    bl = bands(shape, levels)
    flags = entropy.decode_bits(decoder, len(bl))
    qbands = [np.zeros(b.shape, np.int64) for b in bl]
    for i, b in enumerate(bl):
        if not flags[i]:
            continue
        ps = _parent_sibling(qbands, b)
        for odd in (0, 1):
            cx = K.phase_contexts(ps, qbands[i], odd)
            K.scatter_phase(qbands[i], entropy.decode_signed(decoder, cx, entries[b.cls]), odd)
        q[b.slices] = qbands[i]
    return q
