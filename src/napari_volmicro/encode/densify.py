"""Adaptive density control: densification (paper 3.4) and error-driven relocation.

Both edit a ``GaussianParameters`` in place together with its Adam state:
rows that survive keep their moments, new or moved rows start from zero.

- ``GradEMA``: EMA (alpha) of each Gaussian's position-gradient norm, measured
  on the normalised domain [0, 1]^3 as in the paper.
- ``densify_step``: clone small high-gradient Gaussians (perturbation
  N(0, (0.01 n_a)^2) voxels per axis), split large ones into two at
  mu +- R (0.25 s) with scales x 0.8, prune faint (w < tau_prune) or
  oversized (max s > s_max) ones; growth is capped at ``max_n``.
- ``relocate_step``: move the least-massive Gaussians to the lattice voxels
  where the reconstruction is most too dark (sampled with probability
  proportional to the squared positive residual).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..gaussians_torch import GaussianParameters

RAW = ("raw_position", "raw_scale", "raw_rotation", "raw_amplitude")


def raw_rows(shape, centers, scales, quats, amps) -> dict[str, torch.Tensor]:
    """Raw parameter rows (and amplitude signs) for activated values (via ``GaussianParameters``' own inverse)."""
    gp = GaussianParameters(shape, centers, scales, quats, amps)
    rows = {name: getattr(gp, name).data for name in RAW}
    rows["sign"] = gp.sign
    return rows


def resize(params: GaussianParameters, opt: torch.optim.Optimizer, keep: torch.Tensor,
           new: dict[str, torch.Tensor] | None = None) -> None:
    """Keep rows ``keep`` (LongTensor) of every raw parameter and append ``new`` rows."""
    for name in RAW:
        old = getattr(params, name)
        data = old.data[keep]
        if new is not None:
            data = torch.cat([data, new[name].to(data)], 0)
        p = nn.Parameter(data.contiguous())
        st = opt.state.pop(old, None)
        if st:
            for key in ("exp_avg", "exp_avg_sq"):
                mom = st[key][keep]
                if new is not None:
                    mom = torch.cat([mom, torch.zeros_like(new[name]).to(mom)], 0)
                st[key] = mom.contiguous()
            opt.state[p] = st
        for group in opt.param_groups:
            group["params"] = [p if q is old else q for q in group["params"]]
        setattr(params, name, p)
    sign = params.sign[keep]
    if new is not None:
        sign = torch.cat([sign, new["sign"].to(sign)], 0)
    params.sign = sign.contiguous()


def reset_rows(params: GaussianParameters, opt: torch.optim.Optimizer, rows: torch.Tensor,
               values: dict[str, torch.Tensor]) -> None:
    """Overwrite rows ``rows`` with raw ``values`` and zero their Adam moments."""
    for name in RAW:
        p = getattr(params, name)
        p.data[rows] = values[name].to(p.data)
        st = opt.state.get(p)
        if st:
            st["exp_avg"][rows] = 0
            st["exp_avg_sq"][rows] = 0
    params.sign[rows] = values["sign"].to(params.sign)


class GradEMA:
    """EMA of position-gradient norms (normalised coordinates), one value per Gaussian."""

    def __init__(self, n: int, alpha: float = 0.95):
        self.alpha = alpha
        self.value = torch.zeros(n, dtype=torch.float64)

    @torch.no_grad()
    def update(self, params: GaussianParameters) -> None:
        g = params.raw_position.grad
        if g is None:
            return
        s = torch.sigmoid(params.raw_position.data)
        gn = (g / (s * (1 - s)).clamp_min(1e-6)).norm(dim=1).double().cpu()
        self.value = self.alpha * self.value + (1 - self.alpha) * gn

    def resize(self, keep: torch.Tensor, n_new: int) -> None:
        self.value = torch.cat([self.value[keep], torch.zeros(n_new, dtype=torch.float64)])


@dataclass
class DensifyStats:
    cloned: int = 0
    split: int = 0
    pruned: int = 0


@torch.no_grad()
def densify_step(params, opt, ema: GradEMA, *, tau_grad, grad_quantile, tau_size, tau_prune,
                 s_max, max_n, rng: np.random.Generator) -> DensifyStats:
    n = len(params)
    stats = DensifyStats()
    if n == 0:
        return stats
    shape = params.shape
    ext = np.asarray(shape, np.float64)
    centers = params.centers().double().cpu().numpy()
    scales = params.scales().double().cpu().numpy()
    quats = params.quaternions().double().cpu().numpy()
    amps = params.amplitudes().double().cpu().numpy()
    g = ema.value.numpy()
    thr = tau_grad if tau_grad is not None else float(np.quantile(g, grad_quantile))
    hot = g > thr
    if tau_grad is None:
        hot &= g > 0
    smax = scales.max(1)
    prune = (np.abs(amps) < tau_prune) | (smax > s_max)
    hot &= ~prune
    small = hot & (smax < tau_size)
    large = hot & ~small
    room = max(0, max_n - (n - int(prune.sum())))
    # most urgent first: split adds one net Gaussian, clone adds one
    cand = np.flatnonzero(small | large)
    cand = cand[np.argsort(-g[cand], kind="stable")][:room]
    small_sel = cand[small[cand]]
    large_sel = cand[large[cand]]
    from ..gaussians import quaternions_to_matrices

    new_c, new_s, new_q, new_a = [], [], [], []
    if small_sel.size:
        jitter = rng.normal(0.0, 0.01, size=(small_sel.size, 3)) * ext
        new_c.append(np.clip(centers[small_sel] + jitter, -0.5, ext - 0.5))
        new_s.append(scales[small_sel])
        new_q.append(quats[small_sel])
        new_a.append(amps[small_sel])
    split_rows = np.zeros(n, bool)
    if large_sel.size:
        rot = quaternions_to_matrices(quats[large_sel])
        off = np.einsum("nij,nj->ni", rot, 0.25 * scales[large_sel])
        for sign in (1.0, -1.0):
            new_c.append(np.clip(centers[large_sel] + sign * off, -0.5, ext - 0.5))
            new_s.append(scales[large_sel] * 0.8)
            new_q.append(quats[large_sel])
            new_a.append(amps[large_sel])
        split_rows[large_sel] = True
    keep = torch.as_tensor(np.flatnonzero(~prune & ~split_rows), dtype=torch.long)
    new = None
    n_new = 0
    if new_c:
        new = raw_rows(shape, np.concatenate(new_c), np.concatenate(new_s), np.concatenate(new_q), np.concatenate(new_a))
        n_new = new["raw_position"].shape[0]
    resize(params, opt, keep, new)
    ema.resize(keep, n_new)
    stats.cloned, stats.split, stats.pruned = int(small_sel.size), int(large_sel.size), int(prune.sum())
    return stats


def _placements(residual, score, lattice_points, k, rng, sigma, signs=None):
    """``k`` new Gaussians (centres, scales, quaternions, amplitudes) at lattice voxels drawn
    with probability proportional to ``score``; amplitude = the residual there, or its
    magnitude times the sign of ``signs`` there (flat) when given."""
    pos = np.flatnonzero(score > 0)
    k = min(k, pos.size)
    if k == 0:
        return None
    p = score[pos].astype(np.float64)
    p /= p.sum()
    pick = rng.choice(pos, size=k, replace=False, p=p)
    centers = lattice_points(pick) + rng.uniform(-0.25, 0.25, size=(k, 3))
    scales = np.full((k, 3), sigma)
    quats = np.zeros((k, 4))
    quats[:, 0] = 1.0
    r = residual[pick].astype(np.float64)
    a = np.clip(np.abs(r) if signs is not None else r, 1e-3, 0.95)
    if signs is not None:
        a *= np.where(signs[pick] < 0, -1.0, 1.0)
    return centers, scales, quats, a


@torch.no_grad()
def relocate_step(params, opt, residual: np.ndarray, lattice_points, fraction: float, rng: np.random.Generator,
                  sigma: float = 1.0, score: np.ndarray | None = None, signs: np.ndarray | None = None) -> int:
    """Move the ``fraction`` least-massive Gaussians to where ``residual`` (target - model) is largest.

    ``residual`` is flat over the lattice; ``lattice_points(idx)`` maps flat indices to (k, 3)
    voxel coordinates. ``score`` (flat, >= 0): where to place them, probability proportional to
    it (default: the squared positive residual); ``signs`` (flat): signed amplitudes with these signs.
    Returns the number moved.
    """
    n = len(params)
    k = int(np.ceil(fraction * n)) if n else 0
    if score is None:
        score = np.where(residual > 0, residual.astype(np.float64) ** 2, 0.0)
    new = _placements(residual, score, lattice_points, k, rng, sigma, signs) if k else None
    if new is None:
        return 0
    centers, scales, quats, a = new
    k = len(a)
    centers = np.clip(centers, -0.5, np.asarray(params.shape) - 0.5)
    amps = np.abs(params.amplitudes().double().cpu().numpy())
    mass = amps * params.scales().double().prod(1).cpu().numpy()
    rows = np.argsort(mass, kind="stable")[:k]
    reset_rows(params, opt, torch.as_tensor(rows, dtype=torch.long), raw_rows(params.shape, centers, scales, quats, a))
    return k


@torch.no_grad()
def spawn_step(params, opt, ema: GradEMA, residual: np.ndarray, score: np.ndarray, lattice_points, k: int,
               rng: np.random.Generator, sigma: float = 1.0, signs: np.ndarray | None = None) -> int:
    """Add ``k`` Gaussians where ``score`` is high (as ``relocate_step`` places them); returns the count."""
    new = _placements(residual, score, lattice_points, k, rng, sigma, signs) if k > 0 else None
    if new is None:
        return 0
    centers, scales, quats, a = new
    centers = np.clip(centers, -0.5, np.asarray(params.shape) - 0.5)
    keep = torch.arange(len(params), dtype=torch.long)
    resize(params, opt, keep, raw_rows(params.shape, centers, scales, quats, a))
    ema.resize(keep, len(a))
    return len(a)


def residual_score(residual: np.ndarray, lattice_shape, size: int = 3, signed: bool = False):
    """Where a new Gaussian would remove the most error: ``(score, smoothed)``, the residual
    averaged over ``size``^3 lattice voxels and its square (flat; positive part only unless
    ``signed``). Averaging first lets noise cancel, so structure that a smooth Gaussian can
    hold outranks single noisy voxels."""
    from scipy import ndimage

    r = ndimage.uniform_filter(residual.reshape(lattice_shape).astype(np.float32), size=size, mode="nearest")
    r = r.reshape(-1)
    pos = r if signed else np.maximum(r, 0.0)
    return pos * pos, r
