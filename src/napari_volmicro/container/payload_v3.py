"""Brick payloads of format version 3: canonical Gaussians in Morton order, entropy-coded.

Each Gaussian is first brought to a **canonical form** that decodes to the same
ellipsoid: scales sorted largest first (the rotation's columns permuted to
match) and, of the eight quaternions that give that ellipsoid (``+-q`` times
the 180-degree turns about its own axes), the one whose real part is the
largest component and positive. It is then quantised to integer **codes**
(an ``(11, count)`` uint16 array, "planes", the same shape as versions 1 and 2):

=====  ==========================================================================
plane  code
=====  ==========================================================================
0-2    position Z, Y, X: ``0 .. 65535`` on a grid of step ``2^(e - POS_FRAC_BITS)``
       voxels from the brick's position box ``lo`` (``e`` per axis, plane 10)
3-5    scales, largest first: float16 magnitude bits with the low mantissa bits
       rounded off (``SCALE_MANTISSA_BITS`` kept)
6      amplitude: ``AMPLITUDE_ZERO +- m``, ``m`` the float16 magnitude bits with
       ``AMPLITUDE_MANTISSA_BITS`` mantissa bits kept
7-9    rotation: the quaternion's vector part over its real part, ``round(r Q) + Q``
       with ``Q = ROTATION_STEPS[plane 3 - plane 5]`` (0 for a round Gaussian:
       no rotation stored)
10     the position shifts ``e_z | e_y << 5 | e_x << 10`` (the same in every
       column; stored once in the payload)
=====  ==========================================================================

Gaussians are stored in **Morton (Z-order) order** of their position codes, so
neighbours in the file are neighbours in space. The payload codes the gaps
between consecutive Morton codes (bit length entropy-coded, the bits below the
leading one stored raw), the largest scale, the differences to the two smaller
scales, the amplitude and the rotation, each with **adaptive categorical
models**: a stream is cut into chunks of 16, 32, 64, ... symbols, and each
chunk is coded with the counts of the chunks before it (per context class,
classes taken from values decoded earlier). Each (chunk, class) is one batched
call of the entropy coder, ``constriction``'s ANS coder; the model parameters
are integer counts, so encoder and decoder build bit-identical models on any
machine. Full specification: docs/format.md.
"""

from __future__ import annotations

import functools
import struct

import numpy as np

from ..errors import FormatError
from ..gaussians import GaussianVolume

PLANES = 11
#: position grid step is 2^-POS_FRAC_BITS voxel (for position boxes up to 65535 steps long)
POS_FRAC_BITS = 4
#: largest position code per axis (16 bits: three interleave into a 48-bit Morton code)
POS_MAX = 65535
#: largest position shift ``e`` (the step doubles per unit)
POS_SHIFT_MAX = 31
#: centres are clamped to their brick's core widened by this many voxels on each side
POSITION_MARGIN = 64
#: mantissa bits kept of the float16 scales
SCALE_MANTISSA_BITS = 4
#: mantissa bits kept of the float16 amplitudes
AMPLITUDE_MANTISSA_BITS = 5
#: amplitude codes are AMPLITUDE_ZERO + signed magnitude code
AMPLITUDE_ZERO = 32768
#: rotation steps per unit of ``r`` by anisotropy ``k = scale code 0 - scale code 2`` (the last
#: entry for any larger ``k``): a rotation error matters in proportion to ``rho - 1/rho`` with
#: ``rho = s_max / s_min``, so rounder Gaussians store coarser rotations, round ones none
ROTATION_STEPS = (0, 4, 8, 12, 16, 20, 28, 32)
#: log2 of the energy ``|w| sqrt(s0 s1 s2)`` (model units x voxel^1.5) from which rotations get the
#: full ``ROTATION_STEPS``
ROTATION_FULL_ENERGY = -2
#: largest ``Q``
ROTATION_Q_MAX = 32

F16_MAX = float(np.finfo(np.float16).max)
F16_TINY = float(np.finfo(np.float16).tiny)
_SCALE_SHIFT = 10 - SCALE_MANTISSA_BITS
_AMP_SHIFT = 10 - AMPLITUDE_MANTISSA_BITS
#: largest magnitude codes that decode to a finite float16
SCALE_CODE_MAX = 0x7BFF >> _SCALE_SHIFT
AMPLITUDE_MAG_MAX = 0x7BFF >> _AMP_SHIFT
#: smallest scale code (clamped to the smallest normal float16)
SCALE_CODE_MIN = (0x0400 + (1 << (_SCALE_SHIFT - 1))) >> _SCALE_SHIFT

#: payload head: position shifts (u16), ANS stream words (u32), then (base u16, alphabet u16) for the
#: largest scale, (alphabet u16) for each scale difference, (base u16, alphabet u16) for the amplitude
HEAD = struct.Struct("<HIHHHHHH")
HEADER_SIZE = HEAD.size
#: largest alphabet of a coded stream (bounds a decoder's model tables)
MAX_ALPHABET = 4096
#: Morton gap bit lengths 0..48
GAP_ALPHABET = 49
#: bits of a symbol the entropy coder codes; lower bits of larger alphabets are stored raw
CODED_BITS = 5
#: first adaptive chunk (symbols); chunk j holds FIRST_CHUNK * 2^j
FIRST_CHUNK = 32
#: weight of an observed symbol against the prior count of 1 for every symbol
COUNT_WEIGHT = 2


# -- canonical form -------------------------------------------------------------------


def _qmul(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Hamilton products of (n, 4) quaternions (w, a, b, c), float64."""
    w1, a1, b1, c1 = p.T
    w2, a2, b2, c2 = q.T
    return np.stack(
        [
            w1 * w2 - a1 * a2 - b1 * b2 - c1 * c2,
            w1 * a2 + a1 * w2 + b1 * c2 - c1 * b2,
            w1 * b2 - a1 * c2 + b1 * w2 + c1 * a2,
            w1 * c2 + a1 * b2 - b1 * a2 + c1 * w2,
        ],
        axis=1,
    )


def _permutation_quaternions() -> dict[tuple[int, int, int], np.ndarray]:
    """For each order ``p`` of the three axes: the unit quaternion whose rotation matrix has
    column ``j`` = ``+-e[p[j]]`` (signs making it a rotation), i.e. ``R(q * m)`` has the columns of
    ``R(q)`` in the order ``p`` (up to sign, which leaves an ellipsoid unchanged)."""
    from itertools import permutations

    from ..gaussians import matrices_to_quaternions

    out = {}
    for p in permutations(range(3)):
        m = np.zeros((3, 3))
        for j, a in enumerate(p):
            m[a, j] = 1.0
        if np.linalg.det(m) < 0:
            m[:, 2] *= -1
        out[p] = matrices_to_quaternions(m[None])[0]
    return out


_PERM_Q = None


def canonical(scales: np.ndarray, quats: np.ndarray, scale_codes: np.ndarray):
    """Scales sorted by ``scale_codes`` (largest first, stable) and the matching quaternion in
    canonical form (float64 (n, 4), real part the largest component and > 0)."""
    global _PERM_Q
    if _PERM_Q is None:
        _PERM_Q = _permutation_quaternions()
    n = len(scales)
    order = np.argsort(-scale_codes, axis=1, kind="stable")
    rows = np.arange(n)[:, None]
    s = scales[rows, order]
    codes = scale_codes[rows, order]
    q = quats.astype(np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    for p, m in _PERM_Q.items():
        if p == (0, 1, 2):
            continue
        sel = np.all(order == np.asarray(p), axis=1)
        if sel.any():
            q[sel] = _qmul(q[sel], np.broadcast_to(m, (int(sel.sum()), 4)))
    w, a, b, c = q.T
    # q, q*i, q*j, q*k: real parts w, -a, -b, -c (the 180-degree turns about the body axes)
    cands = np.stack([q, np.stack([-a, w, c, -b], 1), np.stack([-b, -c, w, a], 1), np.stack([-c, b, -a, w], 1)])
    pick = np.argmax(np.abs(q), axis=1)
    out = cands[pick, np.arange(n)]
    out *= np.where(out[:, :1] < 0, -1.0, 1.0)
    return s, codes, out


# -- quantisation --------------------------------------------------------------------------


def _minifloat(x: np.ndarray, shift: int, mag_max: int) -> tuple[np.ndarray, np.ndarray]:
    """float16 of ``x`` rounded to ``10 - shift`` mantissa bits, ties to even (so values already on a
    finer grid, such as a format-2 file's, are not all rounded the same way): (sign bit, magnitude
    code), the code at most ``mag_max`` (finite)."""
    bits = np.asarray(x, np.float16).view(np.uint16).astype(np.int64)
    mag = bits & 0x7FFF
    mag = np.minimum((mag + (1 << (shift - 1)) - 1 + ((mag >> shift) & 1)) >> shift, mag_max)
    return bits >> 15, mag


def _from_minifloat(sign: np.ndarray, mag: np.ndarray, shift: int) -> np.ndarray:
    return ((sign << 15) | (mag << shift)).astype(np.uint16).view(np.float16).astype(np.float32)


def scale_codes(scales: np.ndarray) -> np.ndarray:
    """(n, 3) scale codes of float scales (voxels)."""
    return _minifloat(np.clip(scales, F16_TINY, F16_MAX), _SCALE_SHIFT, SCALE_CODE_MAX)[1]


def rotation_steps(codes: np.ndarray) -> np.ndarray:
    """``Q`` per Gaussian from its sorted scale codes (planes 3-5) and amplitude code (plane 6):
    ``ROTATION_STEPS[k]`` for the anisotropy ``k = code 3 - code 5``, halved for each octave of
    the Gaussian's energy ``|w| sqrt(s0 s1 s2)`` below ``2^ROTATION_FULL_ENERGY`` (an error of a
    Gaussian costs in proportion to its energy, so fainter ones store coarser rotations)."""
    c = np.asarray(codes, np.int64)
    k = c[0] - c[2]
    table = np.asarray(ROTATION_STEPS, np.int64)
    q = table[np.minimum(k, len(table) - 1)]
    octave = 1 << AMPLITUDE_MANTISSA_BITS  # amplitude and scale code units per octave, summed below
    t = np.abs(c[3] - AMPLITUDE_ZERO) + (c[0] + c[1] + c[2]) * (octave >> SCALE_MANTISSA_BITS) // 2
    full = (ROTATION_FULL_ENERGY + 15 + 3 * 15 // 2) * octave
    shift = np.clip((full - t) // octave, 0, 6)
    return q >> shift


def position_shifts(lo, hi) -> np.ndarray:
    """(3,) int64 ``e`` per axis: the smallest ``e >= 0`` (at most 31) such that the box
    ``lo..hi`` (float32 ends) spans at most 65535 steps of ``2^(e - POS_FRAC_BITS)`` voxels."""
    ext = np.asarray(hi, np.float32).astype(np.float64) - np.asarray(lo, np.float32).astype(np.float64)
    out = np.zeros(3, np.int64)
    for a in range(3):
        e = 0
        while e < POS_SHIFT_MAX and np.ceil(ext[a] * 2.0 ** (POS_FRAC_BITS - e)) > POS_MAX:
            e += 1
        out[a] = e
    return out


def pack_shifts(e) -> int:
    return int(e[0]) | int(e[1]) << 5 | int(e[2]) << 10


def unpack_shifts(v: int) -> np.ndarray:
    return np.array([v & 31, (v >> 5) & 31, (v >> 10) & 31], np.int64)


def morton(q: np.ndarray) -> np.ndarray:
    """(3, n) position codes (< 2^16) -> (n,) int64 Morton codes, bit ``b`` of Z at ``3b + 2``,
    of Y at ``3b + 1``, of X at ``3b``."""
    out = np.zeros(q.shape[1], np.int64)
    for a in range(3):
        out |= _spread(q[a].astype(np.int64)) << (2 - a)
    return out


def demorton(m: np.ndarray) -> np.ndarray:
    """Inverse of ``morton``: (n,) codes < 2^48 -> (3, n) int64."""
    return np.stack([_compact(m >> (2 - a)) for a in range(3)])


def _spread(x: np.ndarray) -> np.ndarray:
    x = x & 0xFFFF
    x = (x | (x << 16)) & 0x0000FF0000FF
    x = (x | (x << 8)) & 0x00F00F00F00F
    x = (x | (x << 4)) & 0x0C30C30C30C3
    x = (x | (x << 2)) & 0x249249249249
    return x


def _compact(x: np.ndarray) -> np.ndarray:
    x = x & 0x249249249249
    x = (x | (x >> 2)) & 0x0C30C30C30C3
    x = (x | (x >> 4)) & 0x00F00F00F00F
    x = (x | (x >> 8)) & 0x0000FF0000FF
    x = (x | (x >> 16)) & 0xFFFF
    return x


def core_shifts(core_lo, core_hi) -> np.ndarray:
    """(3,) int64 position shifts ``e`` of a brick with core ``core_lo``..``core_hi``: the grid
    must span the core and ``POSITION_MARGIN`` voxels either side in at most 65535 steps."""
    ext = np.asarray(core_hi, np.float64) - np.asarray(core_lo, np.float64) + 2 * POSITION_MARGIN + 1
    out = np.zeros(3, np.int64)
    for a in range(3):
        while out[a] < POS_SHIFT_MAX and ext[a] * 2.0 ** (POS_FRAC_BITS - out[a]) > POS_MAX:
            out[a] += 1
    return out


def quantize_brick(gv: GaussianVolume, index, core_lo, core_hi) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussians ``index`` of ``gv`` as one brick with core ``core_lo``..``core_hi`` (voxel indices):
    ``(codes, pos_lo, pos_hi)`` with the (11, n) uint16 codes in canonical form and Morton order and
    the position box of the table entry (float32: the smallest centre, where the grid starts, and
    the largest decoded centre).

    Centres are first clamped to the core's voxel extent widened by ``POSITION_MARGIN`` voxels (a
    Gaussian that far outside its brick is moved to that distance). The grid step is
    ``2^(e - POS_FRAC_BITS)`` with ``e`` from the core (``core_shifts``); a code that would decode
    past the brick's upper cell boundary (``core_hi - 0.5``, less half a step, on axes where
    another brick follows) is lowered, so every decoded centre stays in its brick's cell, and
    quantising a decoded brick again gives the same codes and box (save-load-save identity).
    """
    index = np.asarray(index, np.int64)
    shape = np.asarray(gv.shape, np.int64)
    c_lo = np.asarray(core_lo, np.float64) - 0.5
    c_hi = np.asarray(core_hi, np.float64) - 0.5
    c = np.clip(gv.centers[index].astype(np.float64), c_lo - POSITION_MARGIN, c_hi + POSITION_MARGIN)
    c = c.astype(np.float32).astype(np.float64)
    if len(index) == 0:
        return np.zeros((PLANES, 0), np.uint16), c_lo.astype(np.float32), c_hi.astype(np.float32)
    lo = c.min(axis=0).astype(np.float32)
    e = core_shifts(core_lo, core_hi)
    step = 2.0 ** (e - POS_FRAC_BITS)
    upper = np.where(np.asarray(core_hi) < shape, c_hi - step / 2, c_hi + POSITION_MARGIN)
    top = np.clip(np.floor((upper - lo.astype(np.float64)) / step), 0, POS_MAX)
    q = np.clip(np.rint((c - lo.astype(np.float64)) / step), 0, top)
    codes = _codes(gv, index, q.T, e)
    hi = (lo.astype(np.float64) + codes[0:3].max(axis=1) * step).astype(np.float32)
    return codes, lo, hi


def quantize(gv: GaussianVolume, index: np.ndarray, lo, hi) -> np.ndarray:
    """The (11, n) uint16 codes storing Gaussians ``index`` of ``gv`` on the grid from ``lo`` with the
    step the box ``lo``..``hi`` needs (no clamping; ``quantize_brick`` is what files store)."""
    index = np.asarray(index, np.int64)
    e = position_shifts(lo, hi)
    lo64 = np.asarray(lo, np.float32).astype(np.float64)
    c = gv.centers[index].astype(np.float64)
    q = np.clip(np.rint((c - lo64) / 2.0 ** (e - POS_FRAC_BITS)), 0, POS_MAX).T
    return _codes(gv, index, q, e)


def _codes(gv: GaussianVolume, index: np.ndarray, q: np.ndarray, e: np.ndarray) -> np.ndarray:
    """The codes of Gaussians ``index`` given their (3, n) position codes ``q`` and shifts ``e``."""
    n = len(index)
    codes = np.empty((PLANES, n), np.int64)
    codes[0:3] = q
    sc = scale_codes(gv.scales[index])
    _, sc_sorted, quat = canonical(gv.scales[index], gv.quaternions[index], sc)
    codes[3:6] = sc_sorted.T
    sign, mag = _minifloat(np.clip(gv.amplitudes[index], -F16_MAX, F16_MAX), _AMP_SHIFT, AMPLITUDE_MAG_MAX)
    codes[6] = AMPLITUDE_ZERO + np.where(sign == 1, -mag, mag)
    steps = rotation_steps(codes[3:7])
    r = quat[:, 1:] / quat[:, :1]
    codes[7:10] = (np.rint(r * steps[:, None]) + steps[:, None]).T
    codes[10] = pack_shifts(e)
    order = np.argsort(morton(codes[0:3]), kind="stable")
    return codes[:, order].astype(np.uint16)


def decode(planes: np.ndarray, lo, hi) -> dict[str, np.ndarray]:
    """The float32 arrays the codes decode to (quaternions as stored, not yet normalised).
    Codes must be valid (``from_bytes`` checks them). ``hi`` is not needed."""
    p = planes.astype(np.int64)
    n = p.shape[1]
    e = unpack_shifts(int(p[10, 0])) if n else np.zeros(3, np.int64)
    lo64 = np.asarray(lo, np.float32).astype(np.float64)
    centers = (lo64 + p[0:3].T * 2.0 ** (e - POS_FRAC_BITS)).astype(np.float32)
    scales = _from_minifloat(np.zeros_like(p[3:6]), p[3:6], _SCALE_SHIFT).T
    signed = p[6] - AMPLITUDE_ZERO
    amplitudes = _from_minifloat((signed < 0).astype(np.int64), np.abs(signed), _AMP_SHIFT)
    steps = rotation_steps(p[3:7])
    quats = np.zeros((n, 4), np.float32)
    quats[:, 0] = 1.0
    rot = steps > 0
    quats[rot, 1:] = ((p[7:10, rot] - steps[rot]) / steps[rot]).T.astype(np.float32)
    return {
        "centers": centers,
        "scales": np.ascontiguousarray(scales),
        "quaternions": quats,
        "amplitudes": amplitudes,
    }


# -- streams of symbols -------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def chunk_bounds(n: int) -> tuple[tuple[int, int], ...]:
    """The adaptive chunks of a stream of ``n`` symbols: [0, 32), [32, 96), [96, 224), ..."""
    out, a, size = [], 0, FIRST_CHUNK
    while a < n:
        out.append((a, min(n, a + size)))
        a += size
        size *= 2
    return tuple(out)


def _weights(counts: np.ndarray) -> np.ndarray:
    """Model weights (float64, exact integers) from the counts seen so far: ``2 count + 1``."""
    return (counts * COUNT_WEIGHT + 1).astype(np.float64)


def encode_streams(streams) -> bytes:
    """ANS-code ``streams`` (in decode order) and return the words (little-endian u32).

    A stream is ``(symbols, alphabet)``: int64 symbols in ``0..alphabet-1``. A stream with an
    alphabet of 1 stores nothing. Each chunk (``chunk_bounds``) is coded with the counts of the
    stream's earlier chunks (``_weights``), one batched call per chunk."""
    import constriction

    calls = []
    for symbols, alphabet in streams:
        if alphabet < 2:
            continue
        counts = np.zeros(int(alphabet), np.int64)
        for a, b in chunk_bounds(len(symbols)):
            calls.append((symbols[a:b], _weights(counts)))
            counts += np.bincount(symbols[a:b], minlength=alphabet)
    coder = constriction.stream.stack.AnsCoder()
    for sym, weights in reversed(calls):
        coder.encode_reverse(sym.astype(np.int32), constriction.stream.model.Categorical(weights, perfect=False))
    return np.asarray(coder.get_compressed(), "<u4").tobytes()


def decode_stream(coder, n: int, alphabet: int, where: str) -> np.ndarray:
    """Decode one stream of ``n`` symbols from ``coder`` (see ``encode_streams``)."""
    import constriction

    if alphabet < 2 or n == 0:
        return np.zeros(n, np.int64)
    out = np.empty(n, np.int64)
    weights = np.ones(int(alphabet), np.float64)  # == _weights(counts), kept up to date in place
    categorical = constriction.stream.model.Categorical
    for a, b in chunk_bounds(n):
        try:
            got = coder.decode(categorical(weights, perfect=False), b - a)
        except Exception as exc:  # constriction reports bad data as ValueError/RuntimeError
            raise FormatError(f"{where}: the entropy-coded data are corrupt ({exc})") from None
        out[a:b] = got
        if b < n:
            weights += COUNT_WEIGHT * np.bincount(got, minlength=alphabet)
    return out


# -- contexts ------------------------------------------------------------------------------


def gap_widths(gap_bits: np.ndarray) -> np.ndarray:
    """Raw bits stored for each Morton gap of bit length ``g``: the bits below the leading one."""
    return np.maximum(gap_bits - 1, 0)


def rotation_classes(steps: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """``(Q, indices)`` of the Gaussians with each ``Q > 0`` present, ascending: each class is one
    stream of its Gaussians' three rotation codes (all first components, then second, then third)."""
    order = np.argsort(steps, kind="stable")
    qs, starts = np.unique(steps[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    return [(int(q), order[a:b]) for q, a, b in zip(qs, starts, ends) if q > 0]


# -- payload bytes --------------------------------------------------------------------------


def split_bits(alphabet: int) -> int:
    """Low bits of a symbol of an ``alphabet``-symbol stream stored raw rather than coded: the coded
    part keeps at most ``CODED_BITS`` bits (an entropy coder's cost per symbol grows with the
    alphabet; the low bits of these codes are close to uniform)."""
    return max(0, int(alphabet - 1).bit_length() - CODED_BITS)


def _coded_streams(values: list[tuple[np.ndarray, int]]):
    """Split each (symbols, alphabet): the coded streams and the raw (values, widths) fields."""
    streams, raw_v, raw_w = [], [], []
    for sym, alphabet in values:
        k = split_bits(alphabet)
        streams.append((sym >> k, ((alphabet - 1) >> k) + 1))
        raw_v.append(sym & ((1 << k) - 1))
        raw_w.append(np.full(len(sym), k, np.int64))
    return streams, raw_v, raw_w


def _streams_of(planes: np.ndarray):
    """Coded streams (symbols, alphabet) of a brick's codes in decode order, the head fields, and the
    raw fields (values, widths) in payload order."""
    p = planes.astype(np.int64)
    m = morton(p[0:3])
    gaps = np.diff(m, prepend=0)
    gbits = _bit_length(gaps)
    c0, d1, d2 = p[3], p[3] - p[4], p[4] - p[5]
    amp = p[6]
    head = {
        "shifts": int(p[10, 0]),
        "c0_base": int(c0.min()), "c0_alphabet": int(c0.max() - c0.min() + 1),
        "d1_alphabet": int(d1.max() + 1), "d2_alphabet": int(d2.max() + 1),
        "amp_base": int(amp.min()), "amp_alphabet": int(amp.max() - amp.min() + 1),
    }
    values = [
        (c0 - head["c0_base"], head["c0_alphabet"]),
        (d1, head["d1_alphabet"]),
        (d2, head["d2_alphabet"]),
        (amp - head["amp_base"], head["amp_alphabet"]),
    ]
    for q, idx in rotation_classes(rotation_steps(p[3:7])):
        values.append((p[7:10, idx].ravel(), 2 * q + 1))
    streams, raw_v, raw_w = _coded_streams(values)
    gap_w = gap_widths(gbits)
    raw = np.concatenate([gaps & ((np.int64(1) << gap_w) - 1), *raw_v])
    raw_width = np.concatenate([gap_w, *raw_w])
    return head, [(gbits, GAP_ALPHABET), *streams], raw, raw_width


def _bit_length(x: np.ndarray) -> np.ndarray:
    """Bit length of non-negative int64 values (< 2^53: exact through float64)."""
    out = np.zeros(len(x), np.int64)
    nz = x > 0
    out[nz] = np.floor(np.log2(x[nz].astype(np.float64))).astype(np.int64) + 1
    # guard the float rounding near powers of two
    out[nz] += (x[nz] >> out[nz]) > 0
    out[nz] -= (x[nz] >> np.maximum(out[nz] - 1, 0)) == 0
    return out


def _pack(values: np.ndarray, widths: np.ndarray) -> bytes:
    nbytes = (int(widths.sum()) + 7) // 8
    if len(values) >= 256:
        from ._v3_kernels import pack_fields

        return pack_fields(values.astype(np.int64), widths.astype(np.int64), nbytes).tobytes()
    return pack_fields_reference(values, widths, nbytes).tobytes()


def pack_fields_reference(values: np.ndarray, widths: np.ndarray, nbytes: int) -> np.ndarray:
    """Plain numpy form of ``_v3_kernels.pack_fields``."""
    total = int(widths.sum())
    starts = np.cumsum(widths) - widths
    owner = np.repeat(np.arange(len(widths)), widths)
    bitpos = np.arange(total) - np.repeat(starts, widths)
    bits = (values[owner] >> bitpos) & 1
    out = np.zeros(nbytes * 8, np.uint8)
    out[:total] = bits
    return np.packbits(out, bitorder="little")


def unpack_fields_reference(data: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Plain numpy form of ``_v3_kernels.unpack_fields``."""
    total = int(widths.sum())
    bits = np.unpackbits(np.asarray(data, np.uint8), bitorder="little")[:total].astype(np.int64)
    starts = np.cumsum(widths) - widths
    owner = np.repeat(np.arange(len(widths)), widths)
    bitpos = np.arange(total) - np.repeat(starts, widths)
    out = np.zeros(len(widths), np.int64)
    np.add.at(out, owner, bits << bitpos)
    return out


def _unpack(data: np.ndarray, widths: np.ndarray) -> np.ndarray:
    if len(widths) >= 256:
        from ._v3_kernels import unpack_fields

        return unpack_fields(np.ascontiguousarray(data, np.uint8), widths.astype(np.int64))
    return unpack_fields_reference(data, widths)


def _unpack_from(data: np.ndarray, start_bit: int, widths: np.ndarray) -> np.ndarray:
    """Fields of ``widths`` starting ``start_bit`` bits into ``data``."""
    fields = _unpack(data[start_bit // 8 :], np.concatenate([[start_bit % 8], widths]).astype(np.int64))
    return fields[1:]


def min_size(count: int) -> int:
    """Shortest payload for ``count`` Gaussians: the head, and at least one byte per 8 Gaussians
    (the writer pads with zero bytes), so a file cannot claim more Gaussians than 8 per byte."""
    return 0 if count == 0 else max(HEADER_SIZE, (count + 7) // 8)


def max_size(count: int) -> int:
    """Upper bound of a payload's length for ``count`` Gaussians: no symbol of a stream costs more
    than 26 bits (weights ``2 count + 1`` over at most 2^24 symbols of alphabet <= 4096), eight
    symbols and 47 raw bits per Gaussian, and the head."""
    return 0 if count == 0 else HEADER_SIZE + 4 + (count * (8 * 26 + 47) + 7) // 8 + 4


def max_size_array(count: np.ndarray) -> np.ndarray:
    """``max_size`` of each count of an int64 array (0 for 0)."""
    count = np.asarray(count, np.int64)
    return np.where(count > 0, HEADER_SIZE + 4 + (count * (8 * 26 + 47) + 7) // 8 + 4, 0)


def to_bytes(planes: np.ndarray) -> bytes:
    """Head, ANS words, raw bits (zero-padded to a byte), then zero bytes up to ``min_size``."""
    n = int(planes.shape[1])
    if n == 0:
        return b""
    head, streams, raw, raw_width = _streams_of(planes)
    words = encode_streams(streams)
    out = HEAD.pack(head["shifts"], len(words) // 4, head["c0_base"], head["c0_alphabet"], head["d1_alphabet"],
                    head["d2_alphabet"], head["amp_base"], head["amp_alphabet"])
    out += words + _pack(raw, raw_width)
    return out + bytes(max(0, min_size(n) - len(out)))


def size(planes: np.ndarray) -> int:
    return len(to_bytes(planes))


def _check_head(buf: bytes, count: int, where: str):
    """Check a non-empty payload's length and head: ``(head fields, position shifts e, offset of
    the raw bits)``; ``FormatError`` naming ``where``."""
    if len(buf) < min_size(count):
        raise FormatError(f"{where}: payload has {len(buf)} bytes, too short for {count} Gaussians "
                          f"(at least {min_size(count)})")
    head = HEAD.unpack_from(buf)
    shifts, n_words, c0_base, c0_alpha, d1_alpha, d2_alpha, amp_base, amp_alpha = head
    if shifts >> 15:
        raise FormatError(f"{where}: position shifts 0x{shifts:04x} have the reserved bit set")
    for name, alpha in (("largest scale", c0_alpha), ("scale difference 1", d1_alpha),
                        ("scale difference 2", d2_alpha), ("amplitude", amp_alpha)):
        if not 1 <= alpha <= MAX_ALPHABET:
            raise FormatError(f"{where}: {name} alphabet of {alpha} symbols (expected 1..{MAX_ALPHABET})")
    if c0_base < SCALE_CODE_MIN or c0_base + c0_alpha - 1 > SCALE_CODE_MAX:
        raise FormatError(f"{where}: largest-scale codes {c0_base}..{c0_base + c0_alpha - 1} are out of range")
    if abs(amp_base - AMPLITUDE_ZERO) > AMPLITUDE_MAG_MAX or abs(amp_base + amp_alpha - 1 - AMPLITUDE_ZERO) > AMPLITUDE_MAG_MAX:
        raise FormatError(f"{where}: amplitude codes {amp_base}..{amp_base + amp_alpha - 1} are out of range")
    ans_end = HEADER_SIZE + 4 * n_words
    if ans_end > len(buf):
        raise FormatError(f"{where}: its entropy-coded part ({4 * n_words} bytes) runs past the payload ({len(buf)} bytes)")
    return head, unpack_shifts(shifts), ans_end


def _open(buf: bytes, count: int, where: str):
    """``_check_head`` and the payload's entropy decoder: ``(head, e, coder, ans_end)``."""
    import constriction

    head, e, ans_end = _check_head(buf, count, where)
    words = np.frombuffer(buf, "<u4", head[1], HEADER_SIZE).astype(np.uint32)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
    except Exception as exc:
        raise FormatError(f"{where}: the entropy-coded data are corrupt ({exc})") from None
    return head, e, coder, ans_end


def _check_tail(buf: bytes, count: int, ans_end: int, total_bits: int, where: str) -> None:
    """The payload's length is what its ``total_bits`` raw bits need, and its padding is zero."""
    raw_bytes = (total_bits + 7) // 8
    natural = ans_end + raw_bytes
    want = max(natural, min_size(count))
    if len(buf) != want:
        raise FormatError(f"{where}: payload has {len(buf)} bytes, its contents need {want}")
    if total_bits % 8 and buf[ans_end + raw_bytes - 1] >> (total_bits % 8):
        raise FormatError(f"{where}: non-zero padding bits after the raw bits")
    if any(buf[natural:]):
        raise FormatError(f"{where}: non-zero padding bytes at the end of the payload")


def _split_stream(coder, n: int, alphabet: int, where: str) -> tuple[np.ndarray, int]:
    """The coded parts of a split stream of ``n`` symbols of ``alphabet`` and its raw low bits ``k``."""
    k = split_bits(alphabet)
    return decode_stream(coder, n, ((alphabet - 1) >> k) + 1, where), k


def from_bytes(buf: bytes, count: int, lo, hi, where: str) -> np.ndarray:
    """Payload bytes -> (11, count) uint16 codes; every length, alphabet and code checked
    (``FormatError`` naming ``where``). The reference reader (``read_arrays`` is the fast one)."""
    if count == 0:
        if len(buf):
            raise FormatError(f"{where}: an empty brick must have an empty payload, got {len(buf)} bytes")
        return np.zeros((PLANES, 0), np.uint16)
    head, e, coder, ans_end = _open(buf, count, where)
    _, _, c0_base, c0_alpha, d1_alpha, d2_alpha, amp_base, amp_alpha = head
    gbits = decode_stream(coder, count, GAP_ALPHABET, where)
    if np.ldexp(1.0, gbits).sum() >= 2.0**50:
        raise FormatError(f"{where}: Morton codes run past 48 bits")
    heads = [_split_stream(coder, count, a, where) for a in (c0_alpha, d1_alpha, d2_alpha, amp_alpha)]
    # the rotation classes need whole scale and amplitude codes: their raw low bits come first
    raw_bits = int(gap_widths(gbits).sum()) + count * sum(k for _, k in heads)
    rest = len(buf) - ans_end
    if (raw_bits + 7) // 8 > rest:
        raise FormatError(f"{where}: payload has {len(buf)} bytes, its raw bits need more")
    raw_data = np.frombuffer(buf, np.uint8, rest, ans_end)
    widths = np.concatenate([gap_widths(gbits)] + [np.full(count, k, np.int64) for _, k in heads])
    fields = _unpack(raw_data, widths)
    raw_gap, lows = fields[:count], fields[count:].reshape(4, count)
    c0, d1, d2, amp = ((high << k) | low for (high, k), low in zip(heads, lows))
    c0 = c0 + c0_base
    amp = amp + amp_base
    codes = np.zeros((PLANES, count), np.int64)
    codes[3], codes[4], codes[5] = c0, c0 - d1, c0 - d1 - d2
    bad = (codes[5] < SCALE_CODE_MIN) | (codes[3] > SCALE_CODE_MAX)
    if bad.any():
        raise FormatError(f"{where}: Gaussian {int(np.argmax(bad))} has an invalid scale code")
    bad = np.abs(amp - AMPLITUDE_ZERO) > AMPLITUDE_MAG_MAX
    if bad.any():
        raise FormatError(f"{where}: Gaussian {int(np.argmax(bad))} has an invalid amplitude code")
    codes[6] = amp
    rot = [(q, idx, *_split_stream(coder, 3 * len(idx), 2 * q + 1, where))
           for q, idx in rotation_classes(rotation_steps(codes[3:7]))]
    if not coder.is_empty():
        raise FormatError(f"{where}: the entropy-coded data hold more than the payload's symbols")
    rot_widths = np.concatenate([np.full(3 * len(idx), k, np.int64) for _, idx, _, k in rot] + [np.zeros(0, np.int64)])
    _check_tail(buf, count, ans_end, raw_bits + int(rot_widths.sum()), where)
    if len(rot_widths):
        lows = _unpack_from(raw_data, raw_bits, rot_widths)
        pos = 0
        for q, idx, high, k in rot:
            u = ((high << k) | lows[pos : pos + 3 * len(idx)]).reshape(3, len(idx))
            pos += 3 * len(idx)
            bad = (u > 2 * q).any(axis=0)
            if bad.any():
                raise FormatError(f"{where}: Gaussian {int(idx[np.argmax(bad)])} has an invalid rotation code")
            codes[7:10, idx] = u
    gaps = np.where(gbits > 0, (np.int64(1) << np.maximum(gbits - 1, 0)) | raw_gap, 0)
    m = np.cumsum(gaps)
    if m[-1] >= 1 << 48:
        raise FormatError(f"{where}: Morton codes run past 48 bits")
    codes[0:3] = demorton(m)
    codes[10] = pack_shifts(e)
    return codes.astype(np.uint16)


@functools.lru_cache(maxsize=1)
def _fast_tables():
    """Constants of the fast reader (``_v3_kernels.read_payload``): the format's constants, the
    rotation step table, and the float32 value of every scale code and amplitude magnitude code."""
    octave = 1 << AMPLITUDE_MANTISSA_BITS
    consts = np.array([GAP_ALPHABET, CODED_BITS, FIRST_CHUNK, COUNT_WEIGHT, SCALE_CODE_MIN, SCALE_CODE_MAX,
                       AMPLITUDE_ZERO, AMPLITUDE_MAG_MAX, POS_FRAC_BITS, octave, octave >> SCALE_MANTISSA_BITS,
                       (ROTATION_FULL_ENERGY + 15 + 3 * 15 // 2) * octave, 6], np.int64)
    scale_values = _from_minifloat(np.zeros(SCALE_CODE_MAX + 1, np.int64), np.arange(SCALE_CODE_MAX + 1), _SCALE_SHIFT)
    amp_values = _from_minifloat(np.zeros(AMPLITUDE_MAG_MAX + 1, np.int64), np.arange(AMPLITUDE_MAG_MAX + 1), _AMP_SHIFT)
    out = (consts, np.asarray(ROTATION_STEPS, np.int64), scale_values, amp_values)
    for a in out:
        a.flags.writeable = False
    return out


def read_arrays(buf: bytes, count: int, lo, where: str) -> dict[str, np.ndarray]:
    """Payload bytes -> the float32 arrays they decode to: ``decode(from_bytes(...))`` in one
    compiled pass (``_v3_kernels.read_payload``, the entropy decoder included), every check of the
    reference made. Where a check fails, the reference reads the payload again and raises its
    ``FormatError``."""
    if count == 0:
        return decode(from_bytes(buf, count, lo, None, where), lo, None)
    from ._v3_kernels import read_payload

    consts, rot_table, scale_values, amp_values = _fast_tables()
    head, _, ans_end = _check_head(buf, count, where)
    status, raw_bits, centers, scales, quats, amps = read_payload(
        np.frombuffer(buf, "<u4", head[1], HEADER_SIZE), np.frombuffer(buf, np.uint8, len(buf) - ans_end, ans_end),
        count, head, np.asarray(lo, np.float32), consts, rot_table, scale_values, amp_values)
    if status:
        return decode(from_bytes(buf, count, lo, None, where), lo, None)
    _check_tail(buf, count, ans_end, int(raw_bits), where)
    return {"centers": centers, "scales": scales, "quaternions": quats, "amplitudes": amps}
