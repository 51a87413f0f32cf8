"""Byte budgets with the container: exact final prune, realistic Gaussian estimate (one size model)."""

import time

import numpy as np
import pytest

from napari_volmicro import container
from napari_volmicro.encode import budget
from napari_volmicro.synthetic import random_volume


def _top(gv, n):
    order = np.argsort(-budget.importance(gv), kind="stable")
    return gv.subset(np.sort(order[:n]))


@pytest.mark.parametrize("target", [2_000, 30_000, 80_000])
def test_fit_budget_keeps_the_largest_count_that_fits(target):
    gv = random_volume((100, 647, 813), n=12_000, seed=3, scale_range=(0.4, 12.0))
    fitted = budget.fit_budget(gv, target)
    n = fitted.n_gaussians
    assert container.file_size(fitted) <= target < container.file_size(_top(gv, n + 1))
    np.testing.assert_array_equal(fitted.centers, _top(gv, n).centers)
    np.testing.assert_array_equal(fitted.amplitudes, _top(gv, n).amplitudes)
    assert budget.fit_budget(gv, None) is gv and budget.fit_budget(gv, 10**9) is gv


def test_stored_size_never_decreases_with_the_count():
    gv = random_volume((50, 256, 256), n=800, seed=4)
    sizes = [container.file_size(_top(gv, n)) for n in range(0, 801, 7)]
    assert all(a <= b for a, b in zip(sizes, sizes[1:]))


def test_fit_budget_is_fast_for_20000_gaussians():
    gv = random_volume((100, 647, 813), n=20_000, seed=5)
    t0 = time.perf_counter()
    fitted = budget.fit_budget(gv, 150_000)
    seconds = time.perf_counter() - t0
    assert container.file_size(fitted) <= 150_000 and fitted.n_gaussians > 10_000
    assert seconds < 10.0, seconds  # a guard only: 0.3-4 s on the shared 2-core machine (benchmarks time it)


def test_fit_budget_fits_one_brick_payload_with_a_custom_size():
    from napari_volmicro.container.codec import brick_payload_size

    gv = random_volume((64, 64, 64), n=500, seed=6)

    def size(m):
        return brick_payload_size(m, (0, 0, 0), (64, 64, 64))

    fitted = budget.fit_budget(gv, 3000, size=size)
    assert size(fitted) <= 3000 < size(_top(gv, fitted.n_gaussians + 1))


@pytest.mark.parametrize("version", [1, 2, 3])
def test_size_model_is_close_to_what_fits(version):
    # a model spread over the volume like a trained one: the estimate lands within 10% of the exact count
    from napari_volmicro.container import size_model

    shape = (50, 256, 256)
    gv = random_volume(shape, n=6000, seed=7, scale_range=(0.5, 8.0))
    for target in (20_000, 40_000):
        est = size_model.gaussians_for_payload(target - 184, shape, version)
        exact = budget.fit_budget(gv, target, size=lambda m: container.file_size(m, version=version)).n_gaussians
        assert 0.9 * exact <= est <= 1.1 * exact, (version, target, est, exact)


def test_gaussians_for_bytes_is_the_size_model_of_the_default_format():
    shape = (50, 256, 256)
    gv = random_volume(shape, n=4000, seed=7, scale_range=(0.5, 8.0))
    est = budget.gaussians_for_bytes(gv, 30_000)
    exact = budget.fit_budget(gv, 30_000).n_gaussians
    assert exact <= est <= 1.16 * exact, (est, exact)  # the size model with the 5% COUNT_MARGIN
