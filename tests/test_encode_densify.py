"""Densification clones, splits and prunes as specified; relocation moves the faintest."""

import numpy as np
import torch

from napari_volmicro.encode.densify import GradEMA, densify_step, relocate_step
from napari_volmicro.gaussians_torch import GaussianParameters

SHAPE = (40, 64, 64)


def _model():
    centers = np.array([[10, 20, 20], [20, 32, 32], [30, 40, 40], [20, 10, 50], [5, 50, 10]], float)
    scales = np.array([[1.0, 1.0, 1.0],   # 0 small, hot -> clone
                       [3.0, 1.5, 1.0],   # 1 large (>= tau_size), hot -> split
                       [1.0, 1.0, 1.0],   # 2 faint -> prune
                       [8.0, 8.0, 8.0],   # 3 oversized (> s_max) -> prune
                       [1.0, 1.0, 1.0]])  # 4 small, cold -> unchanged
    quats = np.tile([1.0, 0, 0, 0], (5, 1))
    amps = np.array([0.5, 0.5, 1e-4, 0.5, 0.5])
    gp = GaussianParameters(SHAPE, centers, scales, quats, amps)
    opt = torch.optim.Adam(gp.parameters(), lr=0.01)
    # one step so Adam has state to carry over
    (gp.amplitudes().sum() + gp.centers().sum() + gp.scales().sum()).backward()
    opt.step()
    ema = GradEMA(5)
    ema.value = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    return gp, opt, ema


def test_clone_split_prune():
    gp, opt, ema = _model()
    before_c = gp.centers().detach().numpy().copy()
    before_s = gp.scales().detach().numpy().copy()
    stats = densify_step(gp, opt, ema, tau_grad=0.5, grad_quantile=0.9, tau_size=2.0, tau_prune=1e-3,
                         s_max=6.0, max_n=100, rng=np.random.default_rng(0))
    assert (stats.cloned, stats.split, stats.pruned) == (1, 1, 2)
    # kept: 0 and 4 (1 split away, 2 and 3 pruned); new: clone of 0, two halves of 1
    assert len(gp) == 5
    c = gp.centers().detach().numpy()
    s = gp.scales().detach().numpy()
    np.testing.assert_allclose(c[0], before_c[0], atol=1e-3)
    np.testing.assert_allclose(c[1], before_c[4], atol=1e-3)
    # clone: same scale, position perturbed by N(0, (0.01 n)^2)
    np.testing.assert_allclose(s[2], before_s[0], rtol=1e-3)
    assert 0 < np.abs(c[2] - before_c[0]).max() < 5 * 0.01 * max(SHAPE)
    # split: at mu +- R(0.25 s) (identity rotation here), scales x 0.8
    np.testing.assert_allclose(c[3], before_c[1] + 0.25 * before_s[1], atol=1e-2)
    np.testing.assert_allclose(c[4], before_c[1] - 0.25 * before_s[1], atol=1e-2)
    np.testing.assert_allclose(s[3], 0.8 * before_s[1], rtol=1e-3)
    # Adam state follows the rows: kept rows keep moments, new rows start at zero
    st = opt.state[gp.raw_position]
    assert st["exp_avg"].shape == (5, 3)
    assert torch.all(st["exp_avg"][2:] == 0) and torch.any(st["exp_avg"][:2] != 0)
    assert len(ema.value) == 5 and float(ema.value[2:].abs().sum()) == 0


def test_growth_cap_and_quantile_threshold():
    gp, opt, ema = _model()
    stats = densify_step(gp, opt, ema, tau_grad=None, grad_quantile=0.5, tau_size=2.0, tau_prune=1e-3,
                         s_max=6.0, max_n=3, rng=np.random.default_rng(0))
    # 2 pruned leaves 3 Gaussians: the cap of 3 leaves no room to grow
    assert stats.cloned == 0 and stats.split == 0 and stats.pruned == 2
    assert len(gp) == 3


def test_relocate_moves_least_massive_to_largest_residual():
    gp, opt, ema = _model()
    residual = np.zeros(16)
    residual[7] = 0.8  # the only voxel that is too dark
    target = np.array([[12.0, 30.0, 44.0]])
    moved = relocate_step(gp, opt, residual, lambda idx: np.repeat(target, len(idx), 0), 0.2, np.random.default_rng(0))
    assert moved == 1
    c = gp.centers().detach().numpy()
    # Gaussian 2 (amplitude 1e-4) had the least mass
    assert np.abs(c[2] - target[0]).max() <= 0.26
    assert abs(float(gp.amplitudes()[2].detach()) - 0.8) < 1e-3
