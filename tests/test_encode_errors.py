"""Bad input to the encoder raises InputError with a useful message."""

import numpy as np
import pytest

from napari_volmicro.encode import Trainer, compress
from napari_volmicro.errors import InputError

GOOD = np.random.default_rng(0).random((10, 12, 14)).astype(np.float32)


@pytest.mark.parametrize(
    "volume, words",
    [
        (np.zeros((32, 32), np.float32), "2"),
        (np.zeros((3, 10, 12, 14), np.float32), "axis"),
        (np.zeros((10, 12, 14, 3), np.uint8), "RGB"),
        (np.full((10, 12, 14), np.nan, np.float32), "NaN"),
        (np.zeros((4, 12, 14), np.float32), "8"),
        (np.zeros((10, 12, 14), bool), "bool"),
        (np.array([["a"] * 10] * 10), ""),
    ],
)
def test_bad_volumes(volume, words):
    with pytest.raises(InputError, match=words):
        Trainer(volume)


def test_inf():
    v = GOOD.copy()
    v[1, 2, 3] = np.inf
    with pytest.raises(InputError, match="Inf"):
        compress(v)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(bpp=1e-6), "smaller than an empty model"),
        (dict(ratio=1e9), "smaller than an empty model"),
        (dict(bpp=-1), "bpp must be a positive"),
        (dict(bpp=0.1, ratio=10), "at most one"),
        (dict(gaussians=-3), "gaussians"),
        (dict(preset="fast"), "preset"),
        (dict(steps=0), "steps"),
        (dict(seed=-1), "seed"),
        (dict(device="tpu"), "device"),
        (dict(spacing=(1, 0, 1)), "spacing"),
        (dict(no_such_option=1), "unknown training option"),
    ],
)
def test_bad_parameters(kwargs, words):
    with pytest.raises(InputError, match=words):
        Trainer(GOOD, **kwargs)
