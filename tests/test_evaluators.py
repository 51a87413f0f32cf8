"""What every evaluator shares: names, regions, empty models, errors, real data."""

import numpy as np
import pytest

from napari_volmicro.errors import RegionError, VolmicroError
from napari_volmicro.evaluate import EVALUATORS, get_evaluator
from napari_volmicro.gaussians import GaussianVolume
from napari_volmicro.intensity import IntensityMapping
from napari_volmicro.synthetic import random_volume

NAMES = sorted(EVALUATORS)


def test_evaluators_are_found_by_name():
    for name in NAMES:
        ev = get_evaluator(name)
        assert ev.name == name
        assert get_evaluator(name) is ev
    with pytest.raises(VolmicroError, match="unknown evaluator 'fast'"):
        get_evaluator("fast")


@pytest.mark.parametrize("name", NAMES)
def test_region_decode_equals_full_decode_cut(small_model, name):
    full = small_model.decode(evaluator=name, k=8)
    assert full.dtype == np.uint16 and full.shape == small_model.shape
    for region in [
        (slice(0, 24), slice(0, 40), slice(0, 36)),
        (slice(5, 19), slice(12, 13), slice(3, 30)),
        (slice(1, 24, 5), slice(0, 40, 3), slice(2, 36, 2)),
    ]:
        np.testing.assert_array_equal(small_model.decode(region, evaluator=name, k=8), full[region])


@pytest.mark.parametrize("name", NAMES)
def test_grid_decode_equals_points(small_model, name):
    region = (slice(2, 20, 3), slice(0, 40, 4), slice(5, 36, 6))
    grid = small_model.decode_model(region, evaluator=name, k=8)
    from napari_volmicro.region import normalize_region

    pts = normalize_region(region, small_model.shape).points()
    at_points = small_model.mapping.to_model(small_model.evaluate(pts, evaluator=name, k=8))
    np.testing.assert_allclose(grid.ravel(), at_points, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_empty_model_decodes_to_the_background_level(name):
    mapping = IntensityMapping(offset=220.0, scale=1500.0, dtype=np.uint16)
    gv = GaussianVolume.empty((10, 12, 14), mapping=mapping)
    np.testing.assert_array_equal(gv.decode(evaluator=name), np.full((10, 12, 14), 220, np.uint16))
    np.testing.assert_array_equal(gv.decode((slice(2, 9, 2), slice(0, 12), slice(13, 14)), evaluator=name), 220)
    np.testing.assert_array_equal(gv.evaluate([[1.5, 2.0, 3.0]], evaluator=name), [220.0])
    np.testing.assert_array_equal(gv.decode_model(evaluator=name), 0.0)


@pytest.mark.parametrize("name", NAMES)
def test_bad_requests_raise_clear_errors(small_model, name):
    with pytest.raises(VolmicroError, match="k .* positive integer"):
        small_model.decode(evaluator=name, k=0)
    with pytest.raises(RegionError, match="axis Y"):
        small_model.decode((slice(0, 4), slice(30, 50), slice(0, 4)), evaluator=name)
    with pytest.raises(RegionError, match="empty"):
        small_model.decode((slice(3, 3), slice(0, 4), slice(0, 4)), evaluator=name)


def test_evaluators_agree_on_a_model_fitted_to_real_data(bead_crop):
    """A quick least-squares fit to a real bead crop; all evaluators decode it alike."""
    vol = bead_crop.astype(np.float64)
    bg = float(np.median(vol))
    scale = float(vol.max() - bg)
    # One Gaussian per bright voxel above half maximum (a crude but real model).
    zyx = np.argwhere(vol > bg + 0.3 * scale).astype(np.float64)
    n = len(zyx)
    assert 5 < n < 2000
    gv = GaussianVolume(
        vol.shape, zyx, np.full((n, 3), 1.2), np.tile([1.0, 0, 0, 0], (n, 1)),
        (vol[tuple(zyx.T.astype(int))] - bg) / scale / 4.0,
        mapping=IntensityMapping(bg, scale, np.float32),
    )
    ref = gv.decode(evaluator="reference")
    dense = gv.decode(evaluator="dense")
    np.testing.assert_allclose(dense, ref, rtol=1e-5, atol=1e-5 * scale)
    knn_all = gv.decode(evaluator="knn", k=n)
    np.testing.assert_allclose(knn_all, ref, rtol=1e-5, atol=1e-5 * scale)
    knn8 = gv.decode(evaluator="knn", k=8)
    assert np.all(knn8 <= ref + 1e-4 * scale)  # non-negative amplitudes: fewer terms, lower sums
    # The model resembles the data (it is a fit, not noise).
    assert np.corrcoef(dense.ravel(), vol.ravel())[0, 1] > 0.8


def test_random_models_property():
    """Several random models, shapes and strides: dense and KNN(K=N) equal the reference."""
    rng = np.random.default_rng(7)
    for seed in range(4):
        shape = tuple(int(s) for s in rng.integers(8, 30, 3))
        gv = random_volume(shape, n=int(rng.integers(1, 40)), seed=seed)
        step = tuple(int(s) for s in rng.integers(1, 4, 3))
        start = tuple(int(rng.integers(0, s // 2)) for s in shape)
        region = tuple(slice(a, None, st) for a, st in zip(start, step))
        ref = gv.decode_model(region, evaluator="reference")
        for name, k in (("dense", 32), ("knn", gv.n_gaussians)):
            got = gv.decode_model(region, evaluator=name, k=k)
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6 * max(1.0, float(np.abs(ref).max())))
