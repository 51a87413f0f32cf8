"""The ellipsoid mesh has the Gaussian's axes, position and colour."""

import numpy as np
import pytest

from napari_volmicro.ellipsoids import ellipsoid_mesh, icosphere, select_gaussians
from napari_volmicro.errors import InputError
from napari_volmicro.gaussians import GaussianVolume, matrices_to_quaternions
from napari_volmicro.intensity import IntensityMapping
from napari_volmicro.synthetic import random_volume


def _rotation(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def test_icosphere_is_a_closed_unit_sphere():
    for sub, (nv, nf) in {0: (12, 20), 1: (42, 80), 2: (162, 320)}.items():
        v, f = icosphere(sub)
        assert v.shape == (nv, 3) and f.shape == (nf, 3)
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-12)
        # closed manifold: every edge is shared by exactly two faces
        edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
        _, counts = np.unique(edges, axis=0, return_counts=True)
        assert np.all(counts == 2)


def test_known_gaussian_has_right_axes():
    rot = _rotation([1, 2, -0.5], 0.7)
    scales = np.array([4.0, 2.0, 0.5])
    gv = GaussianVolume(
        (40, 40, 40), [[10.0, 20.0, 15.0]], [scales], matrices_to_quaternions(rot[None]), [0.8],
        mapping=IntensityMapping(offset=10, scale=200, dtype=np.uint16),
    )
    sigma = 2.0
    v, f, vals = ellipsoid_mesh(gv, sigma=sigma, subdivisions=3)
    c = np.array([10.0, 20.0, 15.0])
    d = v.astype(np.float64) - c
    # every vertex lies on the ellipsoid x^T Sigma^-1 x = sigma^2
    prec = gv.precisions()[0]
    np.testing.assert_allclose(np.einsum("vi,ij,vj->v", d, prec, d), sigma**2, rtol=1e-4)
    # the extent along each principal axis is sigma * scale (icosphere vertices hit the poles
    # only approximately, so check the covariance of the vertex cloud instead: its eigenvectors
    # are the principal axes, ordered by scale)
    w, vecs = np.linalg.eigh(np.cov(d.T))
    order = np.argsort(-w)
    for j, col in enumerate(np.argsort(-scales)):
        assert abs(abs(vecs[:, order[j]] @ rot[:, col]) - 1) < 1e-3
    proj = d @ rot  # coordinates along the principal axes
    np.testing.assert_allclose(np.abs(proj).max(axis=0), sigma * scales, rtol=0.02)
    assert np.all(vals == np.float32(0.8))
    _, _, orig = ellipsoid_mesh(gv, values="original")
    np.testing.assert_allclose(orig, 0.8 * 200, rtol=1e-6)
    # physical units multiply by the spacing
    gv2 = gv.replace(spacing=(2.0, 0.5, 0.5))
    vp, _, _ = ellipsoid_mesh(gv2, physical=True)
    vv, _, _ = ellipsoid_mesh(gv2)
    np.testing.assert_allclose(vp, vv * np.array([2.0, 0.5, 0.5], np.float32), rtol=1e-6)


def test_merged_mesh_offsets_faces_and_selection():
    gv = random_volume(n=30, seed=3)
    sphere_v, sphere_f = icosphere(1)
    idx = select_gaussians(gv, top_n=5)
    assert len(idx) == 5
    assert np.all(np.diff(gv.amplitudes[idx]) <= 0)
    assert gv.amplitudes[idx[-1]] >= np.sort(gv.amplitudes)[-5]
    v, f, vals = ellipsoid_mesh(gv, idx)
    assert v.shape == (5 * len(sphere_v), 3) and f.shape == (5 * len(sphere_f), 3)
    assert f.max() == len(v) - 1
    # faces of ellipsoid k only reference its own vertices
    fk = f.reshape(5, -1, 3)
    for k in range(5):
        assert fk[k].min() == k * len(sphere_v) and fk[k].max() == (k + 1) * len(sphere_v) - 1
    # mean of each ellipsoid's vertices is its centre (icosphere is symmetric)
    np.testing.assert_allclose(v.reshape(5, -1, 3).mean(axis=1), gv.centers[idx], atol=1e-4)
    np.testing.assert_allclose(vals.reshape(5, -1)[:, 0], gv.amplitudes[idx])


def test_select_by_region():
    gv = random_volume(n=60, seed=1)
    region = (slice(0, 12), slice(10, 30), slice(None))
    idx = select_gaussians(gv, region=region)
    c = gv.centers
    inside = (c[:, 0] >= -0.5) & (c[:, 0] < 11.5) & (c[:, 1] >= 9.5) & (c[:, 1] < 29.5)
    assert set(idx.tolist()) == set(np.flatnonzero(inside).tolist())
    assert 0 < len(idx) < 60


def test_empty_and_bad_arguments():
    gv = random_volume(n=5)
    v, f, vals = ellipsoid_mesh(gv, np.zeros(5, bool))
    assert v.shape == (0, 3) and f.shape == (0, 3) and vals.shape == (0,)
    with pytest.raises(InputError, match="sigma"):
        ellipsoid_mesh(gv, sigma=0)
    with pytest.raises(InputError, match="subdivisions"):
        ellipsoid_mesh(gv, subdivisions=9)
    with pytest.raises(InputError, match="top_n"):
        select_gaussians(gv, top_n=-1)
