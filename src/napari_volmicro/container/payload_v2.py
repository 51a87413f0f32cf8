"""Brick payloads of format version 2: quantised codes, bit-packed plane by plane (about 12 bytes per Gaussian).

Each Gaussian is quantised to 11 integer **codes** (an ``(11, count)`` uint16
array, "planes", the same shape as version 1's):

=====  ==========================================================================
plane  code
=====  ==========================================================================
0-2    position Z, Y, X: ``0 .. L`` over the brick's position box, ``L = 2^B - 1``
       with ``B`` the fewest bits (at most 16) giving a step <= 1/16 voxel
3-5    scales: float16 bits with the 5 low mantissa bits rounded off (``bits >> 5``)
6      quaternion: index (0-3) of the component that is exactly +1
7-9    quaternion: the other three components in order, ``round(value * 128) + 128``
10     amplitude: ``32768 +- (float16 magnitude bits >> 4)`` (sign and 6 mantissa bits)
=====  ==========================================================================

The payload is 11 plane descriptors (``u16 base, u8 width``) followed by the
planes, each stored as ``count`` values ``code - base`` of ``width`` bits
(least significant bit first, padded with zero bits to a whole byte). Widths
follow the brick's actual range of each code, so a brick pays only for the
bits its values use. The size is a function of the codes alone, and reading
is a fixed amount of arithmetic: no decompressor, nothing data-dependent to
bound. Full specification: docs/format.md.

Dequantise(quantise(x)) is a fixed point, so saving a loaded model reproduces
the file byte for byte.
"""

from __future__ import annotations

import struct

import numpy as np

from ..errors import FormatError
from ..gaussians import GaussianVolume

PLANES = 11
#: position codes step at most 1/POS_STEPS_PER_VOXEL voxel (error <= 1/32 voxel)
POS_STEPS_PER_VOXEL = 16
#: largest position bit count (a box longer than 4095 voxels gets a coarser step)
POS_MAX_BITS = 16
#: mantissa bits kept of the float16 scales (relative error <= 2^-6)
SCALE_MANTISSA_BITS = 5
#: mantissa bits kept of the float16 amplitudes (relative error <= 2^-7)
AMPLITUDE_MANTISSA_BITS = 6
#: quaternion components (after dividing by the largest) are multiples of 1/QUAT_STEPS
QUAT_STEPS = 128
#: amplitude codes are AMPLITUDE_ZERO + signed magnitude code
AMPLITUDE_ZERO = 32768
#: one plane descriptor: base (u16, the smallest code), width (u8, bits per value, 0..16)
DESCRIPTOR = struct.Struct("<HB")
HEADER_SIZE = PLANES * DESCRIPTOR.size

F16_MAX = float(np.finfo(np.float16).max)
F16_TINY = float(np.finfo(np.float16).tiny)
_SCALE_SHIFT = 10 - SCALE_MANTISSA_BITS
_AMP_SHIFT = 10 - AMPLITUDE_MANTISSA_BITS
#: largest magnitude codes that decode to a finite float16
SCALE_CODE_MAX = 0x7BFF >> _SCALE_SHIFT
AMPLITUDE_MAG_MAX = 0x7BFF >> _AMP_SHIFT
#: the widest a payload can be: 33 descriptor bytes + at most 16 bits per code + one padding byte per plane
MAX_BITS_PER_GAUSSIAN = PLANES * 16


#: bytes a payload adds beyond its bit-packed codes: the descriptors, and at most one padding byte per plane
BRICK_OVERHEAD = HEADER_SIZE + PLANES
#: widest possible code span (bits) of each non-position plane: scales (codes 1..991), quaternion
#: index (0..3), quaternion components (0..256), amplitude (32768 -+ 1983)
OTHER_MAX_BITS = 3 * 10 + 2 + 3 * 9 + 12


def max_bits_per_gaussian(extent) -> int:
    """Upper bound of the bits per Gaussian of a brick whose centres span at most ``extent``
    voxels per axis (ZYX); with ``BRICK_OVERHEAD`` bytes per brick it bounds the payload."""
    levels = position_levels(np.zeros(3, np.float32), np.asarray(extent, np.float32))
    return int(sum(int(v).bit_length() for v in levels)) + OTHER_MAX_BITS


def max_size(count: int) -> int:
    """Upper bound of a payload's length for ``count`` Gaussians (0 for an empty brick)."""
    return 0 if count == 0 else HEADER_SIZE + PLANES + count * MAX_BITS_PER_GAUSSIAN // 8


def position_levels(lo, hi) -> np.ndarray:
    """(3,) int64 ``L`` per axis: the largest position code, ``2^B - 1`` with ``B`` the fewest bits
    (0..16) such that ``L >= (hi - lo) * 16`` (exact float64 comparisons of float32 box ends)."""
    ext = np.asarray(hi, np.float32).astype(np.float64) - np.asarray(lo, np.float32).astype(np.float64)
    need = ext * POS_STEPS_PER_VOXEL
    levels = np.full(3, (1 << POS_MAX_BITS) - 1, np.int64)
    for a in range(3):
        for b in range(POS_MAX_BITS + 1):
            if (1 << b) - 1 >= need[a]:
                levels[a] = (1 << b) - 1
                break
    return levels


def _minifloat(x: np.ndarray, shift: int, mag_max: int) -> tuple[np.ndarray, np.ndarray]:
    """float16 of ``x`` rounded (half up in magnitude) to ``10 - shift`` mantissa bits:
    (sign bit, magnitude code) with the code at most ``mag_max`` (finite)."""
    bits = np.asarray(x, np.float16).view(np.uint16).astype(np.int64)
    mag = np.minimum((bits & 0x7FFF) + (1 << (shift - 1)) >> shift, mag_max)
    return bits >> 15, mag


def _from_minifloat(sign: np.ndarray, mag: np.ndarray, shift: int) -> np.ndarray:
    return ((sign << 15) | (mag << shift)).astype(np.uint16).view(np.float16).astype(np.float32)


def quantize(gv: GaussianVolume, index: np.ndarray, lo, hi) -> np.ndarray:
    """The (11, n) uint16 codes storing Gaussians ``index`` of ``gv`` (position box ``lo``..``hi``)."""
    index = np.asarray(index, np.int64)
    n = len(index)
    codes = np.empty((PLANES, n), np.int64)
    levels = position_levels(lo, hi)
    lo64 = np.asarray(lo, np.float32).astype(np.float64)
    ext = np.asarray(hi, np.float32).astype(np.float64) - lo64
    c = gv.centers[index].astype(np.float64)
    t = np.divide(c - lo64, ext, out=np.zeros(c.shape), where=ext > 0)
    codes[0:3] = np.clip(np.rint(t * levels), 0, levels).T
    _, codes[3:6] = _minifloat(np.clip(gv.scales[index], F16_TINY, F16_MAX).T, _SCALE_SHIFT, SCALE_CODE_MAX)
    sign, mag = _minifloat(np.clip(gv.amplitudes[index], -F16_MAX, F16_MAX), _AMP_SHIFT, AMPLITUDE_MAG_MAX)
    codes[10] = AMPLITUDE_ZERO + np.where(sign == 1, -mag, mag)
    q = gv.quaternions[index].astype(np.float64)
    rows = np.arange(n)
    big = np.argmax(np.abs(q), axis=1)
    qc = np.rint(q / q[rows, big][:, None] * QUAT_STEPS).astype(np.int64)
    # rounding may have made an earlier component +-1 too: the first of magnitude 1 is the one
    # stored as +1 (what argmax finds again after the reader normalises), so re-storing is exact
    first = np.argmax(np.abs(qc) == QUAT_STEPS, axis=1)
    qc *= np.sign(qc[rows, first])[:, None]
    codes[6] = first
    others = np.ones((n, 4), bool)
    others[rows, first] = False
    codes[7:10] = (qc[others].reshape(n, 3) + QUAT_STEPS).T
    return codes.astype(np.uint16)


def decode(planes: np.ndarray, lo, hi) -> dict[str, np.ndarray]:
    """The float32 arrays the codes decode to (quaternions as stored, not yet normalised).

    Codes must be in range (``from_bytes`` checks them)."""
    p = planes.astype(np.int64)
    n = p.shape[1]
    levels = position_levels(lo, hi)
    lo64 = np.asarray(lo, np.float32).astype(np.float64)
    ext = np.asarray(hi, np.float32).astype(np.float64) - lo64
    frac = np.divide(p[0:3].T, levels, out=np.zeros((n, 3)), where=levels > 0)
    centers = (lo64 + ext * frac).astype(np.float32)
    scales = _from_minifloat(np.zeros_like(p[3:6]), p[3:6], _SCALE_SHIFT).T
    signed = p[10] - AMPLITUDE_ZERO
    amplitudes = _from_minifloat((signed < 0).astype(np.int64), np.abs(signed), _AMP_SHIFT)
    quats = np.empty((n, 4), np.float32)
    rows = np.arange(n)
    others = np.ones((n, 4), bool)
    others[rows, p[6]] = False
    quats[others] = ((p[7:10].T - QUAT_STEPS) / QUAT_STEPS).astype(np.float32).ravel()
    quats[rows, p[6]] = 1.0
    return {
        "centers": centers,
        "scales": np.ascontiguousarray(scales),
        "quaternions": quats,
        "amplitudes": amplitudes,
    }


def _plane_layout(planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per plane: base (smallest code) and width (bits of the largest ``code - base``)."""
    if planes.shape[1] == 0:
        return np.zeros(PLANES, np.int64), np.zeros(PLANES, np.int64)
    p = planes.astype(np.int64)
    base = p.min(axis=1)
    span = p.max(axis=1) - base
    width = np.array([int(s).bit_length() for s in span], np.int64)
    return base, width


def size(planes: np.ndarray) -> int:
    """Bytes of the payload ``to_bytes(planes)`` (0 for no Gaussians)."""
    n = int(planes.shape[1])
    if n == 0:
        return 0
    _, width = _plane_layout(planes)
    return HEADER_SIZE + int(((n * width + 7) // 8).sum())


def to_bytes(planes: np.ndarray) -> bytes:
    """Descriptors, then each plane's ``code - base`` values bit-packed (LSB first, zero-padded)."""
    n = int(planes.shape[1])
    if n == 0:
        return b""
    base, width = _plane_layout(planes)
    out = [b"".join(DESCRIPTOR.pack(int(b), int(w)) for b, w in zip(base, width))]
    p = planes.astype(np.int64)
    for row, b, w in zip(p, base, width):
        if w:
            bits = ((row - b)[:, None] >> np.arange(w)) & 1
            out.append(np.packbits(bits.astype(np.uint8).ravel(), bitorder="little").tobytes())
    return b"".join(out)


def _unpack(data: np.ndarray, n: int, width: int) -> np.ndarray:
    """``n`` values of ``width`` bits (LSB first) from the bytes ``data`` (exactly ceil(n*width/8))."""
    if n >= 1024:  # compiled for big bricks (same result; the numpy form below is the reference)
        from ._bits import unpack_bits

        return unpack_bits(np.ascontiguousarray(data, np.uint8), n, width)
    padded = np.zeros(len(data) + 3, np.uint32)
    padded[: len(data)] = data
    pos = np.arange(n, dtype=np.int64) * width
    byte, shift = pos >> 3, (pos & 7).astype(np.uint32)
    word = padded[byte] | (padded[byte + 1] << 8) | (padded[byte + 2] << 16)
    return ((word >> shift) & ((1 << width) - 1)).astype(np.int64)


def from_bytes(buf: bytes, count: int, lo, hi, where: str) -> np.ndarray:
    """Payload bytes -> (11, count) uint16 codes, every length and range checked (``FormatError``
    naming ``where``): exact length for the descriptors' widths, zero padding bits, codes in range
    (positions within the levels of the position box ``lo``..``hi``)."""
    if count == 0:
        if len(buf):
            raise FormatError(f"{where}: an empty brick must have an empty payload, got {len(buf)} bytes")
        return np.zeros((PLANES, 0), np.uint16)
    if len(buf) < HEADER_SIZE:
        raise FormatError(f"{where}: payload has {len(buf)} bytes, too short for its {HEADER_SIZE}-byte descriptors")
    desc = [DESCRIPTOR.unpack_from(buf, i * DESCRIPTOR.size) for i in range(PLANES)]
    for i, (_, w) in enumerate(desc):
        if w > 16:
            raise FormatError(f"{where}: plane {i} has a width of {w} bits (at most 16)")
    lengths = [(count * w + 7) // 8 for _, w in desc]
    want = HEADER_SIZE + sum(lengths)
    if len(buf) != want:
        raise FormatError(f"{where}: payload has {len(buf)} bytes, its plane widths need {want}")
    raw = np.frombuffer(buf, np.uint8)
    codes = np.empty((PLANES, count), np.int64)
    pos = HEADER_SIZE
    for i, ((base, w), length) in enumerate(zip(desc, lengths)):
        if w == 0:
            codes[i] = base
            continue
        data = raw[pos : pos + length]
        pos += length
        used = count * w % 8
        if used and int(data[-1]) >> used:
            raise FormatError(f"{where}: plane {i} has non-zero padding bits")
        codes[i] = base + _unpack(data, count, w)
    _check_codes(codes, position_levels(lo, hi), where)
    return codes.astype(np.uint16)


def _check_codes(codes: np.ndarray, levels: np.ndarray, where: str) -> None:
    def refuse(plane, what):
        bad = int(np.argmax(what))
        raise FormatError(f"{where}: Gaussian {bad} has an invalid {plane} code")

    for plane, ok in (
        ("position", (codes[0:3] <= levels[:, None]).all(axis=0)),
        ("scale", ((codes[3:6] >= 1) & (codes[3:6] <= SCALE_CODE_MAX)).all(axis=0)),
        ("quaternion index", codes[6] <= 3),
        ("quaternion", (codes[7:10] <= 2 * QUAT_STEPS).all(axis=0)),
        ("amplitude", np.abs(codes[10] - AMPLITUDE_ZERO) <= AMPLITUDE_MAG_MAX),
    ):
        if not ok.all():
            refuse(plane, ~ok)
