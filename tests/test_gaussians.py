import numpy as np
import pytest

from napari_volmicro.errors import InputError, RegionError, VolmicroError
from napari_volmicro.gaussians import GaussianVolume, matrices_to_quaternions, quaternions_to_matrices
from napari_volmicro.intensity import IntensityMapping
from napari_volmicro.synthetic import random_quaternions, random_volume


def test_rotations_are_orthonormal_and_roundtrip():
    q = random_quaternions(np.random.default_rng(1), 200)
    r = quaternions_to_matrices(q)
    np.testing.assert_allclose(r @ r.transpose(0, 2, 1), np.broadcast_to(np.eye(3), r.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)
    r2 = quaternions_to_matrices(matrices_to_quaternions(r))
    np.testing.assert_allclose(r2, r, atol=1e-12)


def test_covariance_and_precision_are_inverse():
    gv = random_volume(n=30, seed=2)
    prod = gv.covariances() @ gv.precisions()
    np.testing.assert_allclose(prod, np.broadcast_to(np.eye(3), prod.shape), atol=1e-9)
    # eigenvalues of the covariance are the squared scales
    ev = np.sort(np.linalg.eigvalsh(gv.covariances()), axis=1)
    np.testing.assert_allclose(ev, np.sort(gv.scales.astype(np.float64) ** 2, axis=1), rtol=1e-6)


def test_single_gaussian_peak_value_in_original_units():
    mapping = IntensityMapping(offset=100.0, scale=1000.0, dtype=np.uint16)
    gv = GaussianVolume((9, 9, 9), [[4, 4, 4]], [[1.0, 2.0, 1.5]], [[1, 0, 0, 0]], [0.5], mapping=mapping)
    vol = gv.decode(evaluator="reference")
    assert vol.dtype == np.uint16
    assert vol[4, 4, 4] == 600
    assert vol[0, 0, 0] == 100  # beyond 3 sigma: background
    # axis-aligned: value one voxel along Y is exp(-1/8)
    assert vol[4, 5, 4] == round(100 + 500 * np.exp(-1 / 8))


def test_zero_gaussians_decode_to_background():
    gv = GaussianVolume.empty((5, 6, 7), mapping=IntensityMapping(offset=25.0, scale=200.0, dtype=np.uint8))
    vol = gv.decode(evaluator="reference")
    assert vol.shape == (5, 6, 7) and np.all(vol == 25)
    np.testing.assert_array_equal(gv.evaluate([[1, 2, 3]], evaluator="reference"), [25.0])


def test_integer_output_is_clipped_and_rounded():
    m = IntensityMapping(offset=10.0, scale=100.0, dtype=np.uint8)
    out = m.to_original(np.array([-1.0, 0.004, 0.006, 3.0]))
    np.testing.assert_array_equal(out, [0, 10, 11, 255])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(shape=(0, 4, 4)), "shape"),
        (dict(scales=[[1, 0, 1]]), "scales"),
        (dict(quaternions=[[0, 0, 0, 0]]), "quaternions"),
        (dict(amplitudes=[np.nan]), "amplitudes"),
        (dict(centers=[[1, 2]]), "centers"),
        (dict(spacing=(1, -1, 1)), "spacing"),
    ],
)
def test_invalid_parameters_are_refused(kwargs, match):
    base = dict(shape=(4, 4, 4), centers=[[1, 1, 1]], scales=[[1, 1, 1]], quaternions=[[1, 0, 0, 0]], amplitudes=[1.0])
    base.update(kwargs)
    with pytest.raises(InputError, match=match):
        GaussianVolume(**base)


@pytest.mark.parametrize(
    "region",
    [
        (slice(0, 5), slice(0, 5)),
        (slice(0, 30), slice(None), slice(None)),
        (slice(-1, 3), slice(None), slice(None)),
        (slice(3, 3), slice(None), slice(None)),
        (slice(0, 4, 0), slice(None), slice(None)),
        (slice(0, 4), 3, slice(None)),
    ],
)
def test_bad_regions_raise(region):
    gv = random_volume(n=3)
    with pytest.raises(RegionError):
        gv.decode(region, evaluator="reference")


@pytest.mark.parametrize("k", [0, -3, 2.5, True])
def test_bad_k_raises(k):
    gv = random_volume(n=3)
    with pytest.raises(VolmicroError, match="k"):
        gv.evaluate([[1, 1, 1]], evaluator="reference", k=k)


def test_strided_region_matches_full_decode():
    gv = random_volume(n=20, seed=5)
    full = gv.decode_model(evaluator="reference")
    region = (slice(1, 20, 3), slice(5, 37, 2), slice(0, 36, 5))
    part = gv.decode_model(region, evaluator="reference")
    np.testing.assert_allclose(part, full[region], rtol=1e-6, atol=1e-7)


def test_background_field_is_added():
    bg = np.array([[[0.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]], np.float32)  # ramp along Z
    gv = GaussianVolume.empty((5, 3, 3), background=bg)
    vol = gv.decode_model(evaluator="reference")
    np.testing.assert_allclose(vol[:, 1, 1], [0, 0.25, 0.5, 0.75, 1.0], atol=1e-6)
