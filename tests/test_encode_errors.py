"""Bad input to the encoder raises InputError with a useful message."""

import numpy as np
import pytest

from napari_volmicro.encode import Trainer, compress
from napari_volmicro.errors import InputError

GOOD = np.random.default_rng(0).random((10, 12, 14)).astype(np.float32)


@pytest.mark.parametrize(
    "volume, words",
    [
        (np.zeros((32, 32), np.float32), r"shape \(32, 32\) is a 2D image; expected a 3D volume"),
        (np.zeros((3, 10, 12, 14), np.float32), r"axis 0 \(size 3\) looks like channels or time points"),
        (np.zeros((10, 12, 14, 3), np.uint8), r"looks like an RGB image"),
        (np.full((10, 12, 14), np.nan, np.float32), r"contains 1680 NaN and 0 Inf voxels"),
        (np.zeros((4, 12, 14), np.float32), r"fewer than 8 voxels along Z=4"),
        (np.zeros((10, 12, 14), bool), r"boolean array \(a mask\?\)"),
        (np.array([["a"] * 10] * 10), r"dtype <U1 is not numeric; expected integer or floating-point"),
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
