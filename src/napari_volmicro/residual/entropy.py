"""Entropy coding of small non-negative integers with context-selected tables (``constriction``).

Symbols are magnitudes ``0 .. ESCAPE - 1``; ``ESCAPE`` stands for "ESCAPE or
more", and the excess is coded after it with an Elias-gamma code (bit length
from a fixed table, then the bits). Each symbol is coded with one of
``CODEBOOK_SIZE`` fixed distributions (``codebook``): a probability of zero
and a geometric decay of the non-zero magnitudes, on a grid of both. The
encoder picks, for every context of every band class, the codebook entry that
codes that context's symbols in the fewest bits (``choose``) and stores its
index (one byte) in the layer's header; decoder and encoder then use the same
table. The codebook is built from integers only, so every machine builds the
same tables bit for bit (``constriction`` turns the exact integer weights into
its fixed-point model deterministically).

Coding order: the symbols of a band phase are grouped by the codebook entry
their context selects, and each group is coded with one ``Categorical`` model
in raster order within the group, so a decoder that knows the contexts
(computed from what it already decoded) decodes a whole group in one call.

Queue (FIFO) range coder: ``constriction.stream.queue``. A decoder fed any
bytes returns symbols in range (never raises, reads zeros past the end), so
the work of decoding a block is bounded by its symbol count.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: magnitudes 0 .. ESCAPE - 1 are symbols; ESCAPE means ESCAPE + (an Elias-gamma coded excess)
ESCAPE = 18
ALPHABET = ESCAPE + 1
#: grid of the codebook: probability ratios of zero to non-zero, and decays of the non-zero tail
N_ZERO = 56
N_DECAY = 16
CODEBOOK_SIZE = N_ZERO * N_DECAY
#: largest bit length of an escape excess (a decoder never reads more bits than this per symbol)
MAX_EXCESS_BITS = 40
_FIX = 1 << 24


def _zero_weight(i: int, nonzero_total: int) -> int:
    """Weight of the zero symbol for zero-level ``i``: nonzero_total * 2^(i/3 - 5), in integers
    (zero is 1/32 to 10^4 times as likely as all non-zero symbols together)."""
    frac = (1 << 16, 82570, 104032)[i % 3]  # 2^(k/3) * 2^16, k = 0, 1, 2 (rounded)
    return max(1, (nonzero_total * frac << (i // 3)) >> 21)


def _decay(j: int) -> int:
    """Decay of level ``j`` as a 16-bit fraction: from 0.05 (j = 0) to about 0.97 (j = N_DECAY - 1)."""
    return 3277 + (j * (63570 - 3277)) // (N_DECAY - 1)


@lru_cache(maxsize=1)
def codebook() -> np.ndarray:
    """(CODEBOOK_SIZE, ALPHABET) float64 table of integer weights (row = entry i_zero * N_DECAY + i_decay)."""
    rows = []
    for i in range(N_ZERO):
        for j in range(N_DECAY):
            t = _decay(j)
            w = [0] * ALPHABET
            v = _FIX
            for m in range(1, ESCAPE):
                w[m] = max(1, v)
                v = (v * t) >> 16
            # the escape symbol carries the whole tail: v / (1 - t) in integers
            w[ESCAPE] = max(1, (v << 16) // (65536 - t))
            w[0] = _zero_weight(i, sum(w[1:]))
            rows.append(w)
    return np.array(rows, dtype=np.float64)


@lru_cache(maxsize=1)
def _code_lengths() -> np.ndarray:
    """(CODEBOOK_SIZE, ALPHABET) bits each codebook entry spends on each symbol (for ``choose``)."""
    cb = codebook()
    return -np.log2(cb / cb.sum(axis=1, keepdims=True))


def choose(counts: np.ndarray) -> tuple[np.ndarray, float]:
    """Best codebook entry for each row of ``counts`` ((T, ALPHABET) symbol counts) and the total
    bits they spend (float; the escape excesses and signs not included)."""
    counts = np.asarray(counts, dtype=np.float64)
    bits = counts @ _code_lengths().T  # (T, CODEBOOK_SIZE)
    best = np.argmin(bits, axis=1)
    return best.astype(np.int64), float(bits[np.arange(len(best)), best].sum())


@lru_cache(maxsize=CODEBOOK_SIZE)
def model(entry: int):
    """The ``constriction`` model of codebook ``entry``."""
    import constriction

    return constriction.stream.model.Categorical(codebook()[int(entry)], perfect=False)


@lru_cache(maxsize=1)
def _excess_model():
    """Bit length of an escape excess + 1 (1 .. MAX_EXCESS_BITS + 1): a fixed decaying table."""
    import constriction

    w = np.array([float(1 << max(0, 30 - k)) for k in range(MAX_EXCESS_BITS + 2)])
    w[0] = 1.0  # bit length 0 never occurs (excess + 1 >= 1)
    return constriction.stream.model.Categorical(w, perfect=False)


@lru_cache(maxsize=1)
def _bit_model():
    import constriction

    return constriction.stream.model.Uniform(2)


def new_encoder():
    import constriction

    return constriction.stream.queue.RangeEncoder()


def new_decoder(data: bytes):
    import constriction

    words = np.frombuffer(data[: len(data) // 4 * 4], dtype="<u4").astype(np.uint32)
    return constriction.stream.queue.RangeDecoder(words)


def finish(encoder) -> bytes:
    """The encoder's compressed words as little-endian bytes."""
    return encoder.get_compressed().astype("<u4").tobytes()


def _groups_reference(contexts: np.ndarray, entries: np.ndarray):
    """Positions grouped by the codebook entry their context selects: (order, entry values, bounds)
    (plain definition of ``_kernels.group_by_entry``)."""
    chosen = np.asarray(entries, np.int64)[contexts]
    order = np.argsort(chosen, kind="stable")
    values, starts = np.unique(chosen[order], return_index=True)
    return order, values, np.append(starts, len(chosen))


def _groups(contexts: np.ndarray, entries: np.ndarray):
    from ._kernels import group_by_entry

    return group_by_entry(np.ascontiguousarray(contexts, np.int64), np.ascontiguousarray(entries, np.int64),
                          CODEBOOK_SIZE)


def encode_groups(encoder, symbols: np.ndarray, contexts: np.ndarray, entries: np.ndarray) -> None:
    """Code ``symbols`` (ints 0 .. ESCAPE) with the codebook entry ``entries[context]`` of each: the
    positions sharing an entry form one group (groups in increasing entry, positions in order
    within a group), coded with one ``Categorical`` model each."""
    if symbols.size == 0:
        return
    order, values, bounds = _groups(contexts, entries)
    sym = symbols[order].astype(np.int32)
    for e, a, b in zip(values.tolist(), bounds[:-1].tolist(), bounds[1:].tolist()):
        encoder.encode(sym[a:b], model(e))


def decode_groups(decoder, contexts: np.ndarray, entries: np.ndarray) -> np.ndarray:
    """Inverse of ``encode_groups``: symbols for positions with ``contexts`` (int64 array)."""
    out = np.zeros(contexts.size, np.int64)
    if contexts.size == 0:
        return out
    order, values, bounds = _groups(contexts, entries)
    for e, a, b in zip(values.tolist(), bounds[:-1].tolist(), bounds[1:].tolist()):
        out[order[a:b]] = decoder.decode(model(e), b - a)
    return out


def encode_excess(encoder, values: np.ndarray) -> None:
    """Elias-gamma code of ``values`` (non-negative ints < 2^MAX_EXCESS_BITS): bit length of
    ``value + 1`` from a fixed table, then its bits below the leading one, most significant first."""
    if values.size == 0:
        return
    v = values.astype(np.int64) + 1
    lengths = _bit_length(v)
    encoder.encode(lengths.astype(np.int32), _excess_model())
    n_bits = lengths - 1
    if n_bits.sum():
        owner = np.repeat(np.arange(len(v)), n_bits)
        # position of each bit below the leading one, most significant first
        shift = np.repeat(n_bits, n_bits) - 1 - (np.arange(owner.size) - np.repeat(np.cumsum(n_bits) - n_bits, n_bits))
        encoder.encode(((v[owner] >> shift) & 1).astype(np.int32), _bit_model())


def decode_excess(decoder, n: int) -> np.ndarray:
    """Inverse of ``encode_excess`` for ``n`` values (vectorised: bounded work for any input)."""
    if n == 0:
        return np.zeros(0, np.int64)
    lengths = np.clip(decoder.decode(_excess_model(), n).astype(np.int64), 1, MAX_EXCESS_BITS + 1)
    n_bits = lengths - 1
    total = int(n_bits.sum())
    out = np.ones(n, np.int64) << n_bits
    if total:
        bits = decoder.decode(_bit_model(), total).astype(np.int64)
        owner = np.repeat(np.arange(n), n_bits)
        shift = np.repeat(n_bits, n_bits) - 1 - (np.arange(total) - np.repeat(np.cumsum(n_bits) - n_bits, n_bits))
        np.add.at(out, owner, bits << shift)
    return out - 1


def encode_bits(encoder, bits: np.ndarray) -> None:
    """Raw bits (0/1), one per symbol (signs)."""
    if bits.size:
        encoder.encode(bits.astype(np.int32), _bit_model())


def decode_bits(decoder, n: int) -> np.ndarray:
    if n == 0:
        return np.zeros(0, np.int64)
    return decoder.decode(_bit_model(), n).astype(np.int64)


def decode_signed(decoder, contexts: np.ndarray, entries: np.ndarray) -> np.ndarray:
    """Signed values coded as grouped magnitudes (``encode_groups``), escape excesses and sign bits,
    one per context in ``contexts`` (int64)."""
    mag = decode_groups(decoder, contexts, entries)
    esc = mag == ESCAPE
    n_esc = int(esc.sum())
    if n_esc:
        mag[esc] += decode_excess(decoder, n_esc)
    nz = mag != 0
    signs = decode_bits(decoder, int(nz.sum()))
    mag[np.flatnonzero(nz)[signs == 1]] *= -1
    return mag


def _bit_length(v: np.ndarray) -> np.ndarray:
    """Bit length of positive int64 values (exact integer comparisons)."""
    return np.searchsorted(1 << np.arange(63, dtype=np.int64), v, side="right").astype(np.int64)
