"""Format 3's variable-width bit fields, compiled (imported on first use: it loads numba).

The reference (plain numpy) forms live in ``payload_v3`` and are tested against these."""

from __future__ import annotations

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
