"""The training splat: forward equals the reference evaluator, gradients equal torch autograd."""

import numpy as np
import pytest
import torch

from napari_volmicro.encode.splat import Lattice, half_widths, prec6_from_matrices, splat
from napari_volmicro.evaluate.reference import gaussian_sum
from napari_volmicro.synthetic import random_volume


def _setup(seed=1, offset=(1, 0, 1), stride=(1, 2, 2)):
    gv = random_volume((14, 18, 16), n=12, seed=seed)
    lat = Lattice.make(gv.shape, offset, stride)
    p6 = prec6_from_matrices(torch.tensor(gv.precisions(), dtype=torch.float64)).float()
    half = half_widths(np.einsum("nii->ni", gv.covariances()))
    axes = [np.arange(o, n, s) for o, n, s in zip(lat.offset, gv.shape, lat.stride)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(np.float64)
    return gv, lat, p6, half, pts


@pytest.mark.parametrize("offset,stride", [((0, 0, 0), (1, 1, 1)), ((1, 0, 1), (1, 2, 2)), ((1, 2, 0), (2, 3, 2))])
def test_forward_matches_reference(offset, stride):
    gv, lat, p6, half, pts = _setup(offset=offset, stride=stride)
    out = splat(torch.tensor(gv.amplitudes), torch.tensor(gv.centers), p6, half, lat).numpy()
    ref = gaussian_sum(pts, gv.centers, gv.precisions(), gv.amplitudes)
    assert out.shape == (lat.size,)
    assert np.abs(out - ref).max() < 1e-5 * max(1.0, ref.max())
    assert ref.max() > 0.1  # the case is not empty


def test_gradient_matches_autograd():
    gv, lat, p6, half, pts = _setup(seed=3)
    a = torch.tensor(gv.amplitudes, requires_grad=True)
    c = torch.tensor(gv.centers, requires_grad=True)
    pp = p6.clone().requires_grad_(True)
    tgt = torch.randn(len(pts), generator=torch.Generator().manual_seed(0))
    ((splat(a, c, pp, half, lat) - tgt) ** 2).sum().backward()

    # plain torch: every point against every Gaussian, same cutoff
    a2, c2, p2 = (t.detach().double().requires_grad_(True) for t in (a, c, pp))
    d = torch.tensor(pts)[:, None, :] - c2[None]
    pm = torch.stack([p2[:, 0], p2[:, 3], p2[:, 4], p2[:, 3], p2[:, 1], p2[:, 5], p2[:, 4], p2[:, 5], p2[:, 2]], 1)
    d2 = torch.einsum("mni,nij,mnj->mn", d, pm.reshape(-1, 3, 3), d)
    val = (torch.where(d2 <= 9, torch.exp(-0.5 * d2), torch.zeros_like(d2)) * a2).sum(1)
    ((val - tgt.double()) ** 2).sum().backward()
    for mine, ref in ((a.grad, a2.grad), (c.grad, c2.grad), (pp.grad, p2.grad)):
        assert ref.abs().max() > 0
        assert float((mine.double() - ref).abs().max() / ref.abs().max()) < 1e-5


def test_gradient_through_raw_parameters_is_finite_and_descends():
    from napari_volmicro.gaussians_torch import GaussianParameters

    gv, lat, _, half, pts = _setup(seed=4, offset=(0, 0, 0), stride=(1, 1, 1))
    gp = GaussianParameters.from_volume(gv)
    target = torch.zeros(lat.size)
    def loss_fn():
        pred = splat(gp.amplitudes(), gp.centers(), prec6_from_matrices(gp.precisions()), half, lat)
        return ((pred - target) ** 2).sum()
    loss0 = loss_fn()
    loss0.backward()
    with torch.no_grad():
        for p in gp.parameters():
            assert torch.isfinite(p.grad).all()
            p -= 1e-3 * p.grad
    assert float(loss_fn()) < float(loss0)


def test_kernels_release_the_gil():
    """A GUI's main thread keeps running while a training step's kernels run in a worker."""
    import threading
    import time

    from napari_volmicro.encode import _kernels

    rng = np.random.default_rng(0)
    n, shape = 3000, np.array([64, 96, 96], np.int64)
    centers = rng.uniform(0, 64, (n, 3))
    prec = np.tile(np.array([0.05, 0.05, 0.05, 0.0, 0.0, 0.0]), (n, 1))
    half = np.full((n, 3), 3.0 / np.sqrt(0.05))
    amps = np.ones(n, np.float32)
    off, stride = np.zeros(3, np.int64), np.ones(3, np.int64)
    _kernels.splat_forward(centers, prec, amps, half, off, stride, shape, 4)  # compiled / loaded
    t = time.perf_counter()
    _kernels.splat_forward(centers, prec, amps, half, off, stride, shape, 4)
    one = time.perf_counter() - t

    def work():
        for _ in range(max(1, int(0.5 / max(one, 1e-3)))):
            _kernels.splat_forward(centers, prec, amps, half, off, stride, shape, 4)

    th = threading.Thread(target=work)
    ticks, gaps, last = 0, [], time.perf_counter()
    th.start()
    while th.is_alive():
        time.sleep(0.002)
        now = time.perf_counter()
        gaps.append(now - last)
        last, ticks = now, ticks + 1
    th.join()
    # with the GIL held for each call the main thread would wait one whole call (``one``) per tick
    assert ticks >= 20, (ticks, one)
    assert max(gaps) < max(0.25, 3 * one) or one < 0.02
