"""Format 2's bit unpacking: the compiled path (big bricks) equals the numpy reference."""

import numpy as np
import pytest

from napari_volmicro.container import payload_v2
from napari_volmicro.container._bits import unpack_bits


def _numpy_unpack(data, n, width):
    padded = np.zeros(len(data) + 3, np.uint32)
    padded[: len(data)] = data
    pos = np.arange(n, dtype=np.int64) * width
    byte, shift = pos >> 3, (pos & 7).astype(np.uint32)
    word = padded[byte] | (padded[byte + 1] << 8) | (padded[byte + 2] << 16)
    return ((word >> shift) & ((1 << width) - 1)).astype(np.int64)


@pytest.mark.parametrize("width", range(17))
@pytest.mark.parametrize("n", [1, 7, 1024, 1025, 5003])
def test_compiled_unpack_equals_numpy(width, n):
    rng = np.random.default_rng(width * 10_000 + n)
    data = rng.integers(0, 256, (n * width + 7) // 8).astype(np.uint8)
    want = _numpy_unpack(data, n, width)
    assert np.array_equal(unpack_bits(data, n, width), want)
    assert np.array_equal(payload_v2._unpack(data, n, width), want)
