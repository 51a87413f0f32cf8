"""The ``knn-centres`` evaluator (the paper's rule): the K nearest centres (ties to the lower index), 3-sigma cutoff."""

import numpy as np
import pytest

from napari_volmicro.evaluate.base import add_background_points
from napari_volmicro.evaluate.reference import gaussian_sum, nearest_centres_sum
from napari_volmicro.gaussians import GaussianVolume
from napari_volmicro.intensity import IntensityMapping
from napari_volmicro.region import normalize_region
from napari_volmicro.synthetic import random_volume


def knn_oracle(gv, points, k):
    """Brute force (``reference.nearest_centres_sum``): the k centres nearest in float64 (ties: lower index)."""
    return nearest_centres_sum(points, gv.centers, gv.precisions(), gv.amplitudes, k)


def max_rel(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def crowded():
    """400 Gaussians in a 16 x 20 x 18 grid: every voxel is covered by far more than 32."""
    return random_volume((16, 20, 18), n=400, seed=3)


@pytest.fixture(scope="module")
def sparse():
    return random_volume((24, 40, 36), n=50, seed=11)


@pytest.mark.parametrize("k", [1, 8, 32])
@pytest.mark.parametrize(
    "region",
    [
        None,
        (slice(1, 16, 3), slice(2, 20, 2), slice(0, 18, 5)),
        (slice(5, 13), slice(0, 20), slice(9, 18)),
        (slice(7, 8), slice(0, 20), slice(0, 18)),  # one plane: 16 x 16 x 1 tiles, as Browse decodes
        (slice(0, 16), slice(9, 10), slice(1, 18, 2)),  # a strided ZX plane
        (slice(2, 14), slice(3, 20), slice(4, 5)),  # a ZY plane
    ],
)
def test_knn_region_matches_brute_force(crowded, k, region):
    got = crowded.decode_model(region, evaluator="knn-centres", k=k)
    want = knn_oracle(crowded, normalize_region(region, crowded.shape).points(), k).reshape(got.shape)
    assert max_rel(got, want) <= 1e-5


@pytest.mark.parametrize("k", [1, 8, 32])
def test_knn_points_match_brute_force(crowded, k):
    rng = np.random.default_rng(1)
    pts = rng.uniform(-2, np.array(crowded.shape) + 1, size=(1500, 3))
    pts[:300] = np.round(pts[:300])  # voxel centres, where distance ties are likelier
    got = crowded.evaluate(pts, evaluator="knn-centres", k=k)
    assert max_rel(got, knn_oracle(crowded, pts, k)) <= 1e-5


def test_knn_with_enough_neighbours_equals_reference(sparse):
    field = np.random.default_rng(2).uniform(0, 0.1, (2, 3, 3))
    gv = sparse.replace(background=field)
    ref = gv.decode_model(evaluator="reference")
    pts = gv.region_grid.points()
    # K >= N: every Gaussian is a neighbour, the exact sum.
    for k in (len(gv), 10_000):
        assert max_rel(gv.decode_model(evaluator="knn-centres", k=k), ref) <= 1e-5
        assert max_rel(gv.evaluate(pts[::7], evaluator="knn-centres", k=k), gv.evaluate(pts[::7], evaluator="reference")) <= 1e-5
    # K = 32 of 50: at most a handful cover any voxel. K >= the number covering a voxel
    # is not enough in general (a covering Gaussian whose centre is not among the K
    # nearest is dropped); where the covering ones are all among the K nearest the result
    # is the exact sum, and everywhere it is the brute-force K-nearest sum.
    d2 = np.einsum("mni,nij,mnj->mn", pts[:, None] - gv.centers, gv.precisions(), pts[:, None] - gv.centers)
    covering = d2 <= 9
    assert 1 < covering.sum(axis=1).max() < 32
    knn = gv.decode_model(evaluator="knn-centres", k=32).ravel()
    bg = gv.decode_model(evaluator="reference").ravel() - gaussian_sum(pts, gv.centers, gv.precisions(), gv.amplitudes)
    assert max_rel(knn, knn_oracle(gv, pts, 32) + bg) <= 1e-5
    e2 = ((pts[:, None] - gv.centers) ** 2).sum(axis=2)
    rank = np.argsort(np.argsort(e2, axis=1, kind="stable"), axis=1)
    all_near = np.all(~covering | (rank < 32), axis=1)
    assert all_near.mean() > 0.5
    np.testing.assert_allclose(knn[all_near], ref.ravel()[all_near], rtol=1e-5, atol=1e-6)


def test_knn_error_on_crowded_region_is_reported_and_bounded(crowded):
    exact = crowded.decode_model(evaluator="dense")
    rows = []
    for k in (8, 16, 32, 64, 128):
        knn = crowded.decode_model(evaluator="knn-centres", k=k)
        # Non-negative amplitudes: dropping Gaussians can only lower the sum.
        assert np.all(knn <= exact + 1e-5)
        err = float(np.abs(knn - exact).max())
        mse = float(np.mean((knn.astype(np.float64) - exact) ** 2))
        psnr = 10 * np.log10(float(exact.max() - exact.min()) ** 2 / mse) if mse else np.inf
        rows.append((k, err, psnr))
    print("\nK   max|knn - exact|   PSNR(knn vs exact) dB")
    for k, err, psnr in rows:
        print(f"{k:<4d}{err:>14.4f}{psnr:>18.1f}")
    errs = [r[1] for r in rows]
    assert errs[0] > 0.05  # crowded: K=8 really drops Gaussians
    assert all(a >= b - 1e-6 for a, b in zip(errs, errs[1:]))  # more neighbours, less error
    assert rows[2][2] > 10  # K=32: bounded, and far from useless


def test_ties_go_to_the_lower_index():
    # Three Gaussians with the same centre; K=1 keeps only index 0, K=2 indices 0 and 1.
    c = [[5, 5, 5]] * 3
    gv = GaussianVolume((11, 11, 11), c, [[2, 2, 2]] * 3, [[1, 0, 0, 0]] * 3, [0.1, 0.2, 0.4])
    for k, want in ((1, 0.1), (2, 0.3), (3, 0.7)):
        vol = gv.decode_model(evaluator="knn-centres", k=k)
        assert vol[5, 5, 5] == pytest.approx(want, rel=1e-6)
        assert gv.evaluate([[5, 5, 5]], evaluator="knn-centres", k=k)[0] == pytest.approx(want, rel=1e-6)
        # Every voxel is equidistant from the three centres.
        np.testing.assert_allclose(vol, gv.decode_model(evaluator="dense") * want / 0.7, rtol=1e-6, atol=1e-9)


def test_knn_decode_in_original_units(crowded):
    gv = crowded.replace(mapping=IntensityMapping(100.0, 800.0, np.uint16), background=np.full((2, 2, 2), 0.05))
    got = gv.decode(evaluator="knn-centres", k=16)
    assert got.dtype == np.uint16
    want = gv.mapping.to_original(gv.decode_model(evaluator="knn-centres", k=16))
    diff = np.abs(got.astype(np.int64) - want)
    assert diff.max() <= 1 and np.count_nonzero(diff) <= 3
    region = (slice(2, 14), slice(3, 17), slice(4, 16))
    np.testing.assert_array_equal(gv.decode(region, evaluator="knn-centres", k=16), got[region])


def test_knn_empty_model_decodes_to_background():
    gv = GaussianVolume.empty((8, 9, 10), mapping=IntensityMapping(30.0, 10.0, np.uint8))
    np.testing.assert_array_equal(gv.decode(evaluator="knn-centres"), 30)
    np.testing.assert_array_equal(gv.evaluate(np.zeros((4, 3)), evaluator="knn-centres"), 30.0)


def test_knn_plane_of_the_sample_model_matches_brute_force():
    # The shipped model (2,364 trained Gaussians): a 1 x 64 x 96 patch of one plane, as Browse
    # decodes it, where the tiles' neighbour bounds leave many voxels to the exact rank count.
    from importlib.resources import files

    from napari_volmicro.container import load

    gv = load(files("napari_volmicro") / "_data" / "purkinje_sample.vmg")
    assert gv.background is not None
    region = (slice(21, 22), slice(96, 160), slice(64, 160))
    points = normalize_region(region, gv.shape).points()
    got = gv.decode_model(region, evaluator="knn-centres", k=32)
    want = add_background_points(gv, points, knn_oracle(gv, points, 32)).reshape(got.shape)
    assert max_rel(got, want) <= 1e-5


@pytest.mark.parametrize("region", [None, (slice(7, 8), slice(0, 20), slice(0, 18))])
def test_knn_grouped_searches_match_brute_force(crowded, region, monkeypatch):
    # Large searches are split into cubes of queries, each against the centres near it
    # (candidates then come from several range searches): forced here on a small model.
    from napari_volmicro.evaluate import knn_centres as knn

    groups = []
    real = knn._cube_groups
    monkeypatch.setattr(knn, "_ONE_SEARCH_PAIRS", 0)
    monkeypatch.setattr(knn, "_cube_groups", lambda *a: groups.append(real(*a)) or groups[-1])
    got = crowded.decode_model(region, evaluator="knn-centres", k=8)
    want = knn_oracle(crowded, normalize_region(region, crowded.shape).points(), 8).reshape(got.shape)
    assert max_rel(got, want) <= 1e-5
    assert max(len(g) for g in groups) > 1
    pts = np.random.default_rng(4).uniform(-0.5, 15.5, (500, 3))
    assert max_rel(crowded.evaluate(pts, evaluator="knn-centres", k=8), knn_oracle(crowded, pts, 8)) <= 1e-5
