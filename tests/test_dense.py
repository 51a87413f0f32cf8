"""The dense evaluator against the brute-force reference."""

import numpy as np
import pytest

from napari_volmicro.gaussians import GaussianVolume
from napari_volmicro.intensity import IntensityMapping
from napari_volmicro.synthetic import random_volume

SHAPE = (24, 40, 36)


def rel_err(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def model():
    """50 thin, flat and round Gaussians at random rotations, 20% cut by a face."""
    return random_volume(SHAPE, n=50, seed=11)


@pytest.fixture(scope="module")
def field():
    return np.random.default_rng(5).uniform(-0.05, 0.2, size=(3, 4, 5)).astype(np.float32)


REGIONS = [
    None,
    (slice(3, 17), slice(0, 40), slice(10, 30)),  # sub-region
    (slice(0, 24, 3), slice(1, 40, 2), slice(0, 36, 5)),  # strided
    (slice(23, 24), slice(5, 6), slice(0, 36)),  # one row at the last plane
    (slice(2, 21, 4), slice(7, 33), slice(35, 36)),  # strided, one column at the edge
]


@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("with_field", [False, True])
def test_dense_model_matches_reference(model, field, region, with_field):
    gv = model.replace(background=field) if with_field else model
    dense = gv.decode_model(region, evaluator="dense")
    ref = gv.decode_model(region, evaluator="reference")
    assert dense.dtype == np.float32 and dense.shape == ref.shape
    assert rel_err(dense, ref) <= 1e-5
    assert np.count_nonzero(ref) > 0


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64, np.float16])
@pytest.mark.parametrize("with_field", [False, True])
def test_dense_decode_in_original_units(model, field, dtype, with_field):
    span = 400.0 if np.dtype(dtype).itemsize == 1 else 3000.0
    mapping = IntensityMapping(offset=-40.0 if np.dtype(dtype).kind != "u" else 20.0, scale=span, dtype=dtype)
    gv = model.replace(mapping=mapping, background=field if with_field else None)
    region = (slice(0, 24), slice(2, 40, 2), slice(0, 36))
    dense = gv.decode(region, evaluator="dense")
    ref = gv.decode(region, evaluator="reference")
    assert dense.dtype == np.dtype(dtype)
    if np.dtype(dtype).kind in "iu":
        # Equal except where the value lies within float rounding of .5.
        diff = np.abs(dense.astype(np.int64) - ref.astype(np.int64))
        assert diff.max() <= 1
        assert np.count_nonzero(diff) <= 3
        if np.dtype(dtype) == np.uint8:
            assert dense.max() == 255  # clipped, not wrapped
    else:
        np.testing.assert_allclose(dense.astype(np.float64), ref.astype(np.float64), rtol=1e-3 if dtype == np.float16 else 1e-5, atol=1e-3 * span)


def test_integer_output_is_clipped_at_both_ends():
    mapping = IntensityMapping(offset=10.0, scale=500.0, dtype=np.uint8)
    gv = GaussianVolume((9, 9, 9), [[4, 4, 4], [4, 4, 1]], [[1.5, 1.5, 1.5]] * 2, [[1, 0, 0, 0]] * 2, [1.0, -0.2], mapping=mapping)
    vol = gv.decode(evaluator="dense")
    assert vol[4, 4, 4] == 255 and vol[4, 4, 1] == 0
    np.testing.assert_array_equal(vol, gv.decode(evaluator="reference"))


def test_cutoff_is_inclusive():
    # Unit isotropic Gaussian on a voxel centre: voxels at distance exactly 3 have d^2 = 9.
    gv = GaussianVolume((9, 9, 9), [[4, 4, 4]], [[1, 1, 1]], [[1, 0, 0, 0]], [1.0])
    dense = gv.decode_model(evaluator="dense")
    assert dense[4, 4, 7] == np.float32(np.exp(-4.5))
    assert dense[4, 4, 8] == 0.0
    assert dense[4, 7, 4] == dense[7, 4, 4] == dense[4, 1, 4] == dense[4, 4, 1]
    np.testing.assert_array_equal(dense, gv.decode_model(evaluator="reference"))
    pts = np.array([[4, 4, 7.0], [4, 4, 7.0001], [1, 4, 4]])
    e = float(np.float32(np.exp(-4.5)))  # evaluate() widens float32 model values
    np.testing.assert_array_equal(gv.evaluate(pts, evaluator="dense"), [e, 0, e])


def test_extreme_shapes():
    """Needles far thinner than a voxel and long slabs along every axis."""
    rng = np.random.default_rng(3)
    n = 30
    scales = np.where(rng.random((n, 3)) < 0.5, rng.uniform(0.02, 0.3, (n, 3)), rng.uniform(3, 12, (n, 3)))
    q = rng.normal(size=(n, 4))
    gv = GaussianVolume((20, 30, 25), rng.uniform(-0.5, [19.5, 29.5, 24.5], (n, 3)), scales, q, rng.uniform(0.1, 1, n))
    scales[:3] = [[40.0, 25.0, 30.0], [0.01, 35.0, 0.4], [20.0, 0.05, 15.0]]  # huge, and extreme aspect ratios
    gv = gv.replace(scales=scales)
    for region in (None, (slice(0, 20, 2), slice(3, 30, 3), slice(0, 25)), (slice(1, 20, 3), slice(0, 30, 5), slice(2, 25, 4))):
        assert rel_err(gv.decode_model(region, evaluator="dense"), gv.decode_model(region, evaluator="reference")) <= 1e-5


def test_points_match_reference(model, field):
    gv = model.replace(background=field)
    rng = np.random.default_rng(0)
    pts = rng.uniform(-3, np.array(SHAPE) + 2, size=(3000, 3))  # some outside the volume
    pts[:20] = np.round(pts[:20])
    dense = gv.evaluate(pts, evaluator="dense")
    ref = gv.evaluate(pts, evaluator="reference")
    assert rel_err(dense, ref) <= 1e-5


def test_region_equals_full_decode_cut(model):
    gv = model.replace(mapping=IntensityMapping(5.0, 900.0, np.uint16))
    full = gv.decode(evaluator="dense")
    for region in REGIONS[1:]:
        np.testing.assert_array_equal(gv.decode(region, evaluator="dense"), full[region])


def test_empty_model_and_far_away_region_decode_to_background(field):
    mapping = IntensityMapping(offset=25.0, scale=200.0, dtype=np.uint8)
    empty = GaussianVolume.empty(SHAPE, mapping=mapping)
    np.testing.assert_array_equal(empty.decode(evaluator="dense"), np.full(SHAPE, 25, np.uint8))
    with_field = empty.replace(background=field)
    np.testing.assert_array_equal(with_field.decode(evaluator="dense"), with_field.decode(evaluator="reference"))
    # A region no Gaussian reaches.
    one = GaussianVolume(SHAPE, [[2, 2, 2]], [[0.5, 0.5, 0.5]], [[1, 0, 0, 0]], [1.0], mapping=mapping)
    np.testing.assert_array_equal(one.decode((slice(10, 20), slice(20, 40), slice(0, 36)), evaluator="dense"), 25)


def test_many_threads_or_one_give_the_same_result(model):
    import numba

    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = model.decode_model(evaluator="dense")
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one, model.decode_model(evaluator="dense"))
