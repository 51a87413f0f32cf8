"""GPU footprint kernels (simulated) against the CPU kernels and brute force: forward values, gradients."""

import numpy as np
import pytest
import torch

from napari_volmicro import _cuda_footprint as CF
from napari_volmicro._footprint import fixed_point_scale
from napari_volmicro.encode import _kernels as K
from napari_volmicro.encode.splat import Lattice, splat, splat_loss


def _params(gv):
    """CPU-kernel inputs (centres, prec6, amplitudes, half-widths; float64) of a trained model."""
    p = gv.precisions().astype(np.float64)
    cov = gv.covariances().astype(np.float64)
    p6 = np.stack([p[:, 0, 0], p[:, 1, 1], p[:, 2, 2], p[:, 0, 1], p[:, 0, 2], p[:, 1, 2]], 1)
    half = 3.0 * np.sqrt(np.einsum("nii->ni", cov))
    return gv.centers.astype(np.float64), p6, gv.amplitudes.astype(np.float64), half


def _points(lat):
    axes = [o + s * np.arange(n) for o, s, n in zip(lat.offset, lat.stride, lat.shape)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(np.float64)


def _brute(c, p6, a, half, lat, r=None):
    """Every Gaussian at every lattice voxel: the sum, and the ten gradient sums against ``r``."""
    x = _points(lat)
    out = np.zeros(len(x))
    acc = np.zeros((len(c), 10))
    for i in range(len(c)):
        d = x - c[i]
        pzz, pyy, pxx, pzy, pzx, pyx = p6[i]
        d2 = (pzz * d[:, 0] ** 2 + pyy * d[:, 1] ** 2 + pxx * d[:, 2] ** 2
              + 2 * (pzy * d[:, 0] * d[:, 1] + pzx * d[:, 0] * d[:, 2] + pyx * d[:, 1] * d[:, 2]))
        g = np.where(d2 <= 9.0, np.exp(-0.5 * d2), 0.0)
        out += a[i] * g
        if r is not None:
            rg = r * g
            dz, dy, dx = d.T
            acc[i] = [rg.sum(), (rg * dz).sum(), (rg * dy).sum(), (rg * dx).sum(), (rg * dz * dz).sum(),
                      (rg * dy * dy).sum(), (rg * dx * dx).sum(), (rg * dz * dy).sum(), (rg * dz * dx).sum(),
                      (rg * dy * dx).sum()]
    return out, acc


LATTICES = [((0, 0, 0), (1, 1, 1)), ((0, 1, 0), (1, 2, 2)), ((1, 0, 1), (2, 1, 3))]


@pytest.mark.parametrize("off,stride", LATTICES)
def test_forward_and_gradient_sums(sim, nuclei_model, off, stride):
    c, p6, a, half = _params(nuclei_model)
    lat = Lattice.make(nuclei_model.shape, off, stride)
    o, s, sh = lat.arrays()
    cpu = K.splat_forward(c, p6, a, half, o, s, sh, K.N_CHUNKS)
    r = np.random.default_rng(3).standard_normal(lat.size).astype(np.float32)
    ref, ref_acc = _brute(c, p6, a, half, lat, r.astype(np.float64))
    assert ref.max() > 0.1  # the crop is covered
    tab = CF.gaussian_table(*(torch.from_numpy(x) for x in (c, p6, a, half)))
    geom = CF.geometry(lat)
    gpu, rows = CF.splat_lattice(tab, geom, fixed_point_scale(float(np.abs(a).sum())))
    gpu = gpu.numpy()
    np.testing.assert_allclose(gpu, ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(gpu, cpu, rtol=0, atol=1e-6)
    acc = CF.splat_grad(tab, geom, torch.from_numpy(r), rows).numpy()
    np.testing.assert_allclose(acc, K.splat_backward(c, p6, a, half, o, s, sh, r), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(acc, ref_acc, rtol=1e-9, atol=1e-9)


def test_slabs_and_chunks_do_not_change_results(sim, nuclei_model, monkeypatch):
    """Bounded temporaries: one lattice plane per slab and 7 items per backward chunk give the same sums."""
    c, p6, a, half = _params(nuclei_model)
    lat = Lattice.make(nuclei_model.shape)
    tab = CF.gaussian_table(*(torch.from_numpy(x) for x in (c, p6, a, half)))
    geom = CF.geometry(lat)
    scale = fixed_point_scale(float(np.abs(a).sum()))
    r = torch.from_numpy(np.random.default_rng(4).standard_normal(lat.size).astype(np.float32))
    whole, rows = CF.splat_lattice(tab, geom, scale)
    acc = CF.splat_grad(tab, geom, r, rows)
    assert rows is not None
    monkeypatch.setattr(CF, "SLAB_VOXELS", lat.shape[1] * lat.shape[2])
    monkeypatch.setattr(CF, "CHUNK_ITEMS", 7)
    sliced, rows2 = CF.splat_lattice(tab, geom, scale)
    assert rows2 is None  # several slabs
    assert torch.equal(sliced, whole)  # integer sums: identical
    assert torch.equal(CF.splat_grad(tab, geom, r), acc)


def test_autograd_ops_match_cpu(sim, nuclei_model, nuclei_crop):
    """``splat`` and ``splat_loss`` with kernels="cuda": values and gradients as with the CPU kernels."""
    c, p6, a, half = _params(nuclei_model)
    lat = Lattice.make(nuclei_model.shape, (0, 1, 1), (1, 2, 2))
    target = np.ascontiguousarray(nuclei_crop[lat.slices] / nuclei_crop.max(), np.float32).reshape(-1)
    weight = np.random.default_rng(5).uniform(0.5, 1.5, lat.size).astype(np.float32) / lat.size
    results = {}
    for kernels in ("cpu", "cuda"):
        ts = [torch.tensor(x, dtype=torch.float32, requires_grad=True) for x in (a, c, p6)]
        bg = torch.full((lat.size,), 0.01, dtype=torch.float32, requires_grad=True)
        h = half if kernels == "cpu" else torch.from_numpy(half)
        tw = (target, weight) if kernels == "cpu" else (torch.from_numpy(target), torch.from_numpy(weight))
        info = {}
        loss = splat_loss(*ts, bg, h, lat, *tw, info, kernels=kernels)
        (splat(*ts, h, lat, kernels=kernels) ** 2).sum().mul(1e-3).add(loss).backward()
        results[kernels] = (float(loss), info["mse"], [t.grad.numpy().copy() for t in (*ts, bg)])
    (l_cpu, m_cpu, g_cpu), (l_gpu, m_gpu, g_gpu) = results["cpu"], results["cuda"]
    assert l_gpu == pytest.approx(l_cpu, rel=1e-5)
    assert m_gpu == pytest.approx(m_cpu, rel=1e-5)
    for x, y in zip(g_gpu, g_cpu):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-7 * np.abs(y).max())
