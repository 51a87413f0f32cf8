"""GPU dense decoder and K-strongest rule (simulated) against the CPU decoders and brute force."""

import numpy as np
import pytest

from napari_volmicro.evaluate import _cuda_dense
from napari_volmicro.evaluate.dense import decode_into as cpu_decode_into
from napari_volmicro.region import normalize_region

REGIONS = [
    (slice(1, 5), slice(2, 14), slice(0, 12)),
    (slice(0, 8, 3), slice(1, 16, 2), slice(3, 16, 4)),
]


def _brute_top_k(gv, grid, k):
    """The K-strongest rule by brute force (model units, with background): every Gaussian at every voxel."""
    from napari_volmicro import background

    x = grid.points()
    contrib = np.zeros((len(x), gv.n_gaussians))
    prec = gv.precisions().astype(np.float64)
    for i in range(gv.n_gaussians):
        d = x - gv.centers[i].astype(np.float64)
        d2 = np.einsum("mi,ij,mj->m", d, prec[i], d)
        contrib[:, i] = np.where(d2 <= 9.0, float(gv.amplitudes[i]) * np.exp(-0.5 * d2), 0.0)
    out = np.zeros(len(x))
    for m in range(len(x)):
        reach = np.flatnonzero(contrib[m] != 0.0)
        order = reach[np.lexsort((reach, -np.abs(contrib[m, reach])))]
        out[m] = contrib[m, order[:k]].sum()
    if gv.background is not None:
        out += background.sample_points(gv.background, gv.shape, x)
    return out.reshape(grid.shape)


def _cpu(gv, grid, k, dtype=np.float32, conv=()):
    out = np.empty(grid.shape, dtype)
    stats = cpu_decode_into(gv, grid, out, *conv, k=k)
    return out, stats


@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("k", [0, 2])
def test_model_units_match_cpu_and_brute_force(sim, nuclei_model, region, k):
    gv = nuclei_model
    grid = normalize_region(region, gv.shape)
    ref, ref_stats = _cpu(gv, grid, k)
    got = np.empty(grid.shape, np.float32)
    stats = _cuda_dense.decode_into(gv, grid, got, k=k)
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6)
    np.testing.assert_allclose(got, _brute_top_k(gv, grid, k if k else gv.n_gaussians), rtol=0, atol=2e-6)
    np.testing.assert_allclose(stats, ref_stats, rtol=1e-9, atol=1e-12)
    if k:
        assert stats[0] > 0  # the rule replaced voxels: the gather/top-k kernels ran


@pytest.mark.parametrize("k", [0, 3])
def test_integer_output_matches_cpu(sim, neuron_model, k, monkeypatch):
    """uint8 output (rounding half-even, clipping, background): as the CPU writes it; also in small batches."""
    gv = neuron_model
    grid = normalize_region((slice(1, 7), slice(0, 20), slice(2, 14)), gv.shape)
    m = gv.mapping
    conv = (m.offset, m.scale, m.is_integer, *m.clip_range)
    ref, _ = _cpu(gv, grid, k, gv.mapping.dtype, conv)
    assert ref.dtype == np.uint8 and ref.max() > 20
    got = np.empty(grid.shape, np.uint8)
    monkeypatch.setattr(_cuda_dense, "SLOT_BUDGET", 40)  # several gather batches
    _cuda_dense.decode_into(gv, grid, got, *conv, k=k)
    diff = np.abs(got.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01  # a sum within 1e-12 of a .5 may round either way


def test_decoders_dispatch_to_the_gpu(sim, nuclei_model, monkeypatch):
    """gv.decode with the decode device set to cuda runs the GPU path, for "dense" and "knn"."""
    calls = []
    real = _cuda_dense._decode
    monkeypatch.setattr(_cuda_dense, "_decode", lambda *a: calls.append(a[-1]) or real(*a))
    region = REGIONS[0]
    sim.set_decode_device("cpu")
    want = {e: nuclei_model.decode(region, evaluator=e, k=2) for e in ("dense", "knn")}
    assert not calls
    sim.set_decode_device("cuda")
    try:
        for e in ("dense", "knn"):
            got = nuclei_model.decode(region, evaluator=e, k=2)
            np.testing.assert_allclose(got, want[e], rtol=0, atol=1e-4 * float(np.abs(want[e]).max()))
    finally:
        sim.set_decode_device(None)
    assert calls == [0, 2]


def test_out_of_memory_is_a_clear_error(sim, nuclei_model, monkeypatch):
    import torch

    from napari_volmicro.errors import VolmicroError

    def boom(*a):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

    monkeypatch.setattr(_cuda_dense, "_decode", boom)
    grid = normalize_region(None, nuclei_model.shape)
    with pytest.raises(VolmicroError, match=r"out of memory decoding 8 x 16 x 16 voxels.*smaller regions"):
        _cuda_dense.decode_into(nuclei_model, grid, np.empty(grid.shape, np.float32))
