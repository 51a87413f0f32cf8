"""Feature table of a model, and rebuilding the model from it."""

import numpy as np
import pytest

from napari_volmicro.errors import InputError
from napari_volmicro.features import METADATA_KEY, feature_table, gaussians_from_points, model_metadata
from napari_volmicro.gaussians import GaussianVolume, matrices_to_quaternions
from napari_volmicro.intensity import IntensityMapping
from napari_volmicro.synthetic import random_volume


def test_features_of_a_known_gaussian():
    # major axis along X (column 2 of the identity rotation), tilted 30 degrees towards Z
    a = np.radians(30)
    rot = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1.0]])
    tilt = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    r = tilt @ rot
    gv = GaussianVolume(
        (20, 20, 20), [[5, 6, 7]], [[1.0, 2.0, 6.0]], matrices_to_quaternions(r[None]), [0.5],
        spacing=(2.0, 0.5, 0.5), mapping=IntensityMapping(100, 1000, np.uint16),
    )
    t = feature_table(gv)
    assert t["amplitude"][0] == pytest.approx(0.5)
    assert t["amplitude_original"][0] == pytest.approx(500)
    assert (t["scale_major"][0], t["scale_mid"][0], t["scale_minor"][0]) == pytest.approx((6, 2, 1))
    assert t["anisotropy"][0] == pytest.approx(6)
    axis = np.array([t["axis_z"][0], t["axis_y"][0], t["axis_x"][0]])
    np.testing.assert_allclose(axis, r[:, 2] * np.sign(r[0, 2]), atol=1e-6)
    assert t["elevation_deg"][0] == pytest.approx(30, abs=1e-3)
    assert t["volume"][0] == pytest.approx((2 * np.pi) ** 1.5 * 12 * 0.5, rel=1e-5)


def test_round_trip_and_deleting_rows():
    gv = random_volume(n=40, seed=2, mapping=IntensityMapping(20, 300, np.uint8)).replace(
        spacing=(1.5, 0.3, 0.3), background=np.full((2, 3, 3), 0.1, np.float32)
    )
    t = feature_table(gv)
    meta = {METADATA_KEY: model_metadata(gv)}
    back = gaussians_from_points(gv.centers.astype(np.float64), t, meta)
    for name in ("centers", "scales", "quaternions", "amplitudes", "background"):
        np.testing.assert_array_equal(getattr(back, name), getattr(gv, name))
    assert back.shape == gv.shape and back.spacing == gv.spacing and back.mapping == gv.mapping
    # decode agrees exactly
    region = (slice(3, 9), slice(10, 20), slice(0, 36, 3))
    np.testing.assert_array_equal(back.decode(region, "reference"), gv.decode(region, "reference"))
    keep = np.arange(40) % 3 != 0
    sub = gaussians_from_points(gv.centers[keep], {k: v[keep] for k, v in t.items()}, meta)
    np.testing.assert_array_equal(sub.amplitudes, gv.amplitudes[keep])


def test_points_without_model_are_refused():
    gv = random_volume(n=3)
    t = feature_table(gv)
    with pytest.raises(InputError, match="volmicro"):
        gaussians_from_points(gv.centers, t, {})
    t.pop("quat_w")
    with pytest.raises(InputError, match="quat_w"):
        gaussians_from_points(gv.centers, t, {METADATA_KEY: model_metadata(gv)})
    with pytest.raises(InputError, match=r"\(N, 3\)"):
        gaussians_from_points(np.zeros((3, 2)), feature_table(gv), {METADATA_KEY: model_metadata(gv)})
