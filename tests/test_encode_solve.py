"""Closed-form amplitudes and background field (encode/solve.py) against a dense least-squares oracle,
and signed amplitudes in the trainable parameters."""

import numpy as np
import pytest
import torch

from napari_volmicro.encode.densify import GradEMA, raw_rows, reset_rows, resize
from napari_volmicro.encode.solve import FieldOperator, solve_linear
from napari_volmicro.encode.splat import Lattice
from napari_volmicro.gaussians_torch import GaussianParameters


def _problem(seed=0, n=25, shape=(10, 18, 20), stride=(1, 1, 1), offset=(0, 0, 0)):
    rng = np.random.default_rng(seed)
    c = rng.uniform(0, np.asarray(shape) - 1, (n, 3))
    s = rng.uniform(0.7, 2.5, (n, 3))
    p6 = np.zeros((n, 6))
    p6[:, :3] = 1.0 / s**2
    lat = Lattice.make(shape, offset, stride)
    return rng, c, s, p6, 3.0 * s, lat


def _columns(c, s, lat):
    """Dense design matrix: one column per Gaussian (exact 3-sigma cutoff), brute force."""
    zz, yy, xx = np.meshgrid(*[o + st * np.arange(m) for o, st, m in zip(lat.offset, lat.stride, lat.shape)],
                             indexing="ij")
    pts = np.stack([zz.ravel(), yy.ravel(), xx.ravel()], 1).astype(np.float64)
    d2 = (((pts[:, None, :] - c[None]) / s[None]) ** 2).sum(2)
    return np.where(d2 <= 9.0, np.exp(-0.5 * d2), 0.0)


@pytest.mark.parametrize("stride", [(1, 1, 1), (1, 2, 2)])
def test_amplitudes_and_field_match_weighted_least_squares(stride):
    rng, c, s, p6, half, lat = _problem(stride=stride, offset=(0, 1, 0))
    shape = (10, 18, 20)
    fshape = (2, 3, 3)
    fop = FieldOperator(fshape, shape, lat)
    a_cols = _columns(c, s, lat)
    f_cols = np.stack([fop.apply(np.eye(int(np.prod(fshape)))[k]) for k in range(int(np.prod(fshape)))], 1)
    design = np.concatenate([a_cols, f_cols], 1)
    target = (design @ rng.uniform(-0.2, 0.8, design.shape[1]) + rng.normal(0, 0.05, lat.size)).astype(np.float32)
    weight = rng.uniform(0.5, 2.0, lat.size).astype(np.float32)
    sw = np.sqrt(weight.astype(np.float64))
    oracle, *_ = np.linalg.lstsq(design * sw[:, None], target * sw, rcond=None)
    amps, field, before, after = solve_linear(c, p6, half, s, lat, target, weight, amps0=np.zeros(len(c)),
                                              field_op=fop, iterations=500, nonneg=False, amp_max=10.0)
    np.testing.assert_allclose(amps, oracle[: len(c)], atol=1e-6)
    np.testing.assert_allclose(field, oracle[len(c):], atol=1e-6)
    assert after < before
    best = float((weight * (design @ oracle - target) ** 2).sum())
    assert after == pytest.approx(best, rel=1e-7)  # the kernels evaluate in float32


def test_non_negative_solve_clips_into_the_sigmoid_range():
    rng, c, s, p6, half, lat = _problem(seed=1)
    target = (_columns(c, s, lat) @ rng.uniform(-1.0, 2.0, len(c))).astype(np.float32)
    amps, field, _, _ = solve_linear(c, p6, half, s, lat, target, np.ones(lat.size, np.float32),
                                     amps0=np.full(len(c), 0.1), iterations=30, nonneg=True, amp_max=0.95)
    assert field is None
    assert amps.min() >= 0.0 and amps.max() <= 0.95


def test_signed_amplitudes_survive_resize_and_reset():
    shape = (8, 8, 8)
    c = np.array([[2.0, 2, 2], [5, 5, 5], [3, 6, 1]])
    s = np.ones((3, 3))
    q = np.tile([1.0, 0, 0, 0], (3, 1))
    a = np.array([0.4, -0.25, 0.1])
    p = GaussianParameters(shape, c, s, q, a)
    np.testing.assert_allclose(p.amplitudes().detach().numpy(), a, rtol=1e-5)
    np.testing.assert_allclose(p.to_volume().amplitudes, a, rtol=1e-5)
    opt = torch.optim.Adam([p.raw_position, p.raw_scale, p.raw_rotation, p.raw_amplitude])
    ema = GradEMA(3)
    new = raw_rows(shape, c[:1], s[:1], q[:1], np.array([-0.3]))
    resize(p, opt, torch.tensor([1, 2]), new)
    ema.resize(torch.tensor([1, 2]), 1)
    np.testing.assert_allclose(p.amplitudes().detach().numpy(), [-0.25, 0.1, -0.3], rtol=1e-5)
    reset_rows(p, opt, torch.tensor([0]), raw_rows(shape, c[:1], s[:1], q[:1], np.array([0.2])))
    np.testing.assert_allclose(p.amplitudes().detach().numpy(), [0.2, 0.1, -0.3], rtol=1e-5)
