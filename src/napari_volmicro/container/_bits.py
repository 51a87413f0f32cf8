"""Format 2's bit unpacking, compiled (imported on first use: it loads numba)."""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True)
def unpack_bits(data, n, width):
    """``n`` values of ``width`` bits (LSB first, ``width <= 16``) from the uint8 array ``data``
    (at least ceil(n * width / 8) bytes) as int64: the format-2 plane layout."""
    out = np.empty(n, np.int64)
    mask = (1 << width) - 1
    nbytes = data.shape[0]
    for i in range(n):
        pos = i * width
        byte = pos >> 3
        word = np.int64(data[byte]) if byte < nbytes else np.int64(0)
        if byte + 1 < nbytes:
            word |= np.int64(data[byte + 1]) << 8
        if byte + 2 < nbytes:
            word |= np.int64(data[byte + 2]) << 16
        out[i] = (word >> (pos & 7)) & mask
    return out
