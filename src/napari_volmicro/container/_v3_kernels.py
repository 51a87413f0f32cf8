"""Format 3's variable-width bit fields, compiled (imported on first use: it loads numba).

The reference (plain numpy) forms live in ``payload_v3`` and are tested against these."""

from __future__ import annotations

import math

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True)
def pack_fields(values, widths, nbytes):
    """``values[i]`` (int64, < 2^widths[i], widths <= 62) as consecutive bit fields, least
    significant bit first, into ``nbytes`` bytes (zero-padded)."""
    out = np.zeros(nbytes, np.uint8)
    pos = 0
    for i in range(values.shape[0]):
        v = values[i]
        w = widths[i]
        for _ in range(w):
            if v & 1:
                out[pos >> 3] |= np.uint8(1 << (pos & 7))
            v >>= 1
            pos += 1
    return out


@nb.njit(cache=True, nogil=True)
def unpack_fields(data, widths):
    """Inverse of ``pack_fields``: the fields of ``widths`` (sum checked by the caller) as int64."""
    n = widths.shape[0]
    out = np.empty(n, np.int64)
    pos = 0
    for i in range(n):
        w = widths[i]
        v = np.int64(0)
        for b in range(w):
            p = pos + b
            v |= np.int64((data[p >> 3] >> (p & 7)) & 1) << b
        out[i] = v
        pos += w
    return out


# -- the fast reading path of format 3 (payload_v3.read_arrays; reference: from_bytes + decode) ------
#
# The entropy decoder below is constriction's ``AnsCoder`` (64-bit state, 32-bit words popped from
# the end of the word array) decoding with ``Categorical(weights, perfect=False)`` models (24-bit
# fixed-point CDF ``cdf[i] = trunc(C_i * (2^24 - A) / S) + i``, ``C_i`` the weights before symbol i,
# ``S`` their sum), step for step; ``payload_v3.from_bytes`` decodes the same streams with
# constriction itself (the reference, and the encoder's library).

_PRECISION = 24
_QUANTILE_MASK = (1 << _PRECISION) - 1
#: most bits of the quantile a decoding lookup table resolves
_LOOKUP_BITS = 10


@nb.njit(cache=True, nogil=True, inline="always")
def _take(data, acc, nbits, byte, w):
    """Read the next ``w`` bits (<= 56) of ``data``, least significant first, with the reader
    ``(acc, nbits, byte)``: bits held (uint64), how many, next byte. Returns ``(value, reader...)``;
    bytes past the end read as zero."""
    while nbits < w:
        if byte < data.shape[0]:
            acc |= np.uint64(data[byte]) << np.uint64(nbits)
        byte += 1
        nbits += 8
    v = np.int64(acc & ((np.uint64(1) << np.uint64(w)) - np.uint64(1)))
    return v, acc >> np.uint64(w), nbits - w, byte


@nb.njit(cache=True, nogil=True, inline="always")
def _split_bits(alphabet, coded_bits):
    """Low bits of a symbol of ``alphabet`` stored raw (``payload_v3.split_bits``)."""
    n = 0
    v = alphabet - 1
    while v > 0:
        n += 1
        v >>= 1
    return max(0, n - coded_bits)


@nb.njit(cache=True, nogil=True)
def _stream(words, state, pos, out, n, alphabet, first_chunk, weight, counts, cdf, find):
    """Decode ``n`` symbols of an ``alphabet`` into ``out[:n]`` with the chunk-adaptive models of
    ``payload_v3.decode_stream`` (chunks of ``first_chunk``, twice that, ...; weight of a symbol
    ``weight x count + 1``); ``(state, pos)`` is the coder (state, words left). Returns the coder."""
    st = np.uint64(state)  # a uint64 whatever integer type the caller passes
    if alphabet < 2 or n == 0:
        for i in range(n):
            out[i] = 0
        return st, pos
    for s in range(alphabet):
        counts[s] = 0
    free = np.float64((1 << _PRECISION) - alphabet)
    a = 0
    size = first_chunk
    while a < n:
        b = min(n, a + size)
        total = 0.0
        for s in range(alphabet):
            total += np.float64(weight * counts[s] + 1)
        scale = free / total
        cum = 0.0
        for s in range(alphabet):
            cdf[s] = np.int64(cum * scale) + s
            cum += np.float64(weight * counts[s] + 1)
        cdf[alphabet] = 1 << _PRECISION
        # lookup: find[j] = the symbol of quantile j << shift; a quantile's symbol is at most a few
        # steps above the entry of its top bits (cdf rises strictly from cdf[0] = 0)
        bits = 5
        while bits < _LOOKUP_BITS and (2 << bits) <= b - a:
            bits += 1
        shift = _PRECISION - bits
        sym = 0
        for j in range(1 << bits):
            while cdf[sym + 1] <= (j << shift):
                sym += 1
            find[j] = sym
        # unsigned indices below: no negative-index handling in the loop that decodes every symbol
        ushift = np.uint64(shift)
        one = np.uint64(1)
        for i in range(a, b):
            quantile = st & np.uint64(_QUANTILE_MASK)
            lo = np.uint64(find[quantile >> ushift])
            left = np.uint64(cdf[lo])
            right = np.uint64(cdf[lo + one])
            while right <= quantile:
                lo += one
                left = right
                right = np.uint64(cdf[lo + one])
            st = (st >> np.uint64(_PRECISION)) * (right - left) + (quantile - left)
            if st < np.uint64(1 << 32) and pos > 0:
                pos -= 1
                st = (st << np.uint64(32)) | np.uint64(words[pos])
            out[i] = lo
        if b < n:
            for i in range(a, b):
                counts[out[i]] += 1
        a = b
        size *= 2
    return st, pos


@nb.njit(cache=True, nogil=True)
def read_payload(words, raw, count, head, pos_lo, consts, rot_table, scale_values, amp_values):
    """Decode a format-3 payload of ``count`` Gaussians to float32 arrays (``payload_v3.decode``'s),
    checking every code as ``payload_v3.from_bytes`` does.

    ``words``: the entropy-coded u32 words; ``raw``: the payload bytes after them; ``head``: the
    payload head's eight fields (``payload_v3.HEAD``); ``pos_lo`` (3,) float32 position box start;
    ``consts``: GAP_ALPHABET, CODED_BITS, FIRST_CHUNK, COUNT_WEIGHT, smallest and largest scale
    code, AMPLITUDE_ZERO, AMPLITUDE_MAG_MAX, POS_FRAC_BITS, then ``rotation_steps``' code units per
    octave, scale-code weight, full-precision energy and most halvings; ``rot_table``:
    ROTATION_STEPS; ``scale_values`` / ``amp_values``: the float32 value of each scale / amplitude
    magnitude code.

    Returns ``(status, raw_bits, centers, scales, quaternions, amplitudes)``. ``status`` 0: every
    check passed and the coder ended empty; ``raw_bits``: the raw bits the payload holds (the
    caller checks its length and padding). Any other status: some check failed (the reference
    reader says which)."""
    n = count
    centers = np.empty((n, 3), np.float32)
    scales = np.empty((n, 3), np.float32)
    quats = np.zeros((n, 4), np.float32)
    amps = np.empty(n, np.float32)
    gap_alphabet, coded_bits, first_chunk, weight = consts[0], consts[1], consts[2], consts[3]
    smin, smax, azero, amax = consts[4], consts[5], consts[6], consts[7]
    frac_bits = consts[8]
    octave, sweight, full, most = consts[9], consts[10], consts[11], consts[12]
    alphabets = (head[3], head[4], head[5], head[7])
    bases = (head[2], head[6])
    lo = np.empty(3, np.float64)
    step = np.empty(3, np.float64)
    for a in range(3):
        lo[a] = np.float64(pos_lo[a])
        step[a] = math.ldexp(1.0, ((head[0] >> (5 * a)) & 31) - frac_bits)
    counts = np.empty(4097, np.int64)
    cdf = np.empty(4098, np.int64)
    find = np.empty(1 << _LOOKUP_BITS, np.int64)
    # the coder: the last word must not be zero; the state takes words until it reaches 2^32
    pos = words.shape[0]
    state = np.uint64(0)
    if pos > 0:
        pos -= 1
        if words[pos] == 0:
            return 1, 0, centers, scales, quats, amps
        state = np.uint64(words[pos])
        while pos > 0:
            pos -= 1
            state = (state << np.uint64(32)) | np.uint64(words[pos])
            if state >= np.uint64(1 << 32):
                break
    gbits = np.empty(n, np.int64)
    state, pos = _stream(words, state, pos, gbits, n, gap_alphabet, first_chunk, weight, counts, cdf, find)
    total = np.int64(0)
    raw_bits = np.int64(0)
    for i in range(n):
        g = gbits[i]
        total += np.int64(1) << g
        if total >= np.int64(1) << 50:
            return 2, 0, centers, scales, quats, amps
        if g > 1:
            raw_bits += g - 1
    codes = np.empty((4, n), np.int64)
    ks = np.empty(4, np.int64)
    for s in range(4):
        k = _split_bits(alphabets[s], coded_bits)
        ks[s] = k
        state, pos = _stream(words, state, pos, codes[s], n, ((alphabets[s] - 1) >> k) + 1, first_chunk, weight,
                             counts, cdf, find)
        raw_bits += n * k
    if (raw_bits + 7) // 8 > raw.shape[0]:
        return 3, 0, centers, scales, quats, amps
    # raw bits, read in order: the gaps (Morton codes as their running sum), the four streams' low
    # bits, then (below) the rotation codes' low bits
    bit_acc = np.uint64(0)
    nbits = 0
    byte = 0
    m = np.empty(n, np.int64)
    acc = np.int64(0)
    for i in range(n):
        g = gbits[i]
        if g > 0:
            v, bit_acc, nbits, byte = _take(raw, bit_acc, nbits, byte, g - 1)
            acc += (np.int64(1) << (g - 1)) | v
        m[i] = acc
    for s in range(4):
        k = ks[s]
        if k == 0:
            continue
        for i in range(n):
            v, bit_acc, nbits, byte = _take(raw, bit_acc, nbits, byte, k)
            codes[s, i] = (codes[s, i] << k) | v
    q = np.empty(n, np.int64)
    last = rot_table.shape[0] - 1
    n_q = rot_table[last] + 1
    class_counts = np.zeros(n_q, np.int64)
    for i in range(n):
        c0 = codes[0, i] + bases[0]
        c1 = c0 - codes[1, i]
        c2 = c1 - codes[2, i]
        a = codes[3, i] + bases[1]
        codes[0, i] = c0
        codes[1, i] = c1
        codes[2, i] = c2
        codes[3, i] = a
        mag = abs(a - azero)
        if c2 < smin or c0 > smax or mag > amax:
            return 4, 0, centers, scales, quats, amps
        shift = min(max((full - (mag + (c0 + c1 + c2) * sweight // 2)) // octave, 0), most)
        qi = rot_table[min(c0 - c2, last)] >> shift
        q[i] = qi
        class_counts[qi] += 1
    # rotation classes, q ascending, each its Gaussians in order: all first, then second, then third
    order = np.empty(n, np.int64)
    start = np.zeros(n_q, np.int64)
    for v in range(1, n_q):
        start[v] = start[v - 1] + class_counts[v - 1]
    for i in range(n):
        order[start[q[i]]] = i
        start[q[i]] += 1
    rot = np.empty(3 * (n - class_counts[0]), np.int64)
    done = 0
    for qv in range(1, n_q):
        cnt = class_counts[qv]
        if cnt == 0:
            continue
        k = _split_bits(2 * qv + 1, coded_bits)
        state, pos = _stream(words, state, pos, rot[done:], 3 * cnt, ((2 * qv) >> k) + 1, first_chunk, weight,
                             counts, cdf, find)
        done += 3 * cnt
        raw_bits += 3 * cnt * k
    if state != np.uint64(0):
        return 5, 0, centers, scales, quats, amps
    if (raw_bits + 7) // 8 > raw.shape[0]:
        return 6, 0, centers, scales, quats, amps
    for j in range(class_counts[0]):
        quats[order[j], 0] = 1.0
    first = class_counts[0]
    h = 0
    for qv in range(1, n_q):
        cnt = class_counts[qv]
        if cnt == 0:
            continue
        k = _split_bits(2 * qv + 1, coded_bits)
        for comp in range(3):
            for j in range(first, first + cnt):
                v, bit_acc, nbits, byte = _take(raw, bit_acc, nbits, byte, k)
                u = (rot[h] << k) | v
                h += 1
                if u > 2 * qv:
                    return 7, 0, centers, scales, quats, amps
                g = order[j]
                quats[g, 0] = 1.0
                quats[g, 1 + comp] = np.float32(np.float64(u - qv) / np.float64(qv))
        first += cnt
    if n > 0 and acc >= np.int64(1) << 48:
        return 8, 0, centers, scales, quats, amps
    for i in range(n):
        x = m[i]
        for a in range(3):
            v = (x >> (2 - a)) & 0x249249249249
            v = (v | (v >> 2)) & 0x0C30C30C30C3
            v = (v | (v >> 4)) & 0x00F00F00F00F
            v = (v | (v >> 8)) & 0x0000FF0000FF
            v = (v | (v >> 16)) & 0xFFFF
            c = np.float32(lo[a] + v * step[a])
            if not np.isfinite(c):
                return 9, 0, centers, scales, quats, amps
            centers[i, a] = c
        for a in range(3):
            scales[i, a] = scale_values[codes[a, i]]
        d = codes[3, i] - azero
        amps[i] = -amp_values[-d] if d < 0 else amp_values[d]
    return 0, raw_bits, centers, scales, quats, amps


@nb.njit(cache=True, nogil=True)
def box_bounds(table, centre, half):
    """Per axis, the smallest ``table[:, centre + a] - table[:, half + a]`` and the largest sum:
    (3,) float64 lo and hi of the boxes of a prepared Gaussian table (``evaluate._kernels``)."""
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    for i in range(table.shape[0]):
        for a in range(3):
            c = table[i, centre + a]
            e = table[i, half + a]
            lo[a] = min(lo[a], c - e)
            hi[a] = max(hi[a], c + e)
    return lo, hi
