"""Training losses (paper 3.3), in model units (background 0, peak about 1).

- ``edge_weight_map``: ``w_base + w_edge * |grad V| / max |grad V|`` with
  central differences (``np.gradient``), float32, same shape as the volume.
- ``weighted_mse``: ``sum(mask * w * (pred - target)^2) / sum(mask)``.
- ``sparsity``: L1 on amplitudes, ``mean(w_i)``.
- ``scale_bounds``: ``mean(relu(|s_i| - s_max)^2 + relu(s_min - min_j s_ij)^2)`` (voxels).
- ``overlap``: the paper's optional pairwise term over each Gaussian's 8
  nearest centres (off by default).
"""

from __future__ import annotations

import numpy as np
import torch


def edge_weight_map(volume: np.ndarray, w_base: float = 1.0, w_edge: float = 2.0) -> np.ndarray:
    """Per-voxel loss weights (float32, shape of ``volume``), one axis at a time to bound memory."""
    v = np.asarray(volume, np.float32)
    mag = np.zeros(v.shape, np.float32)
    for axis in range(3):
        if v.shape[axis] > 1:
            g = np.gradient(v, axis=axis)
            mag += g * g
            del g
    np.sqrt(mag, out=mag)
    peak = float(mag.max()) if mag.size else 0.0
    if peak > 0:
        mag *= w_edge / peak
    mag += w_base
    return mag


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
                 mask: torch.Tensor | None) -> torch.Tensor:
    d = pred - target
    e = d * d
    if weight is not None:
        e = e * weight
    if mask is not None:
        m = mask.to(e.dtype)
        return (e * m).sum() / m.sum().clamp_min(1.0)
    return e.mean()


def sparsity(amplitudes: torch.Tensor) -> torch.Tensor:
    return amplitudes.abs().mean() if amplitudes.numel() else amplitudes.sum()


def scale_bounds(scales: torch.Tensor, s_min: float, s_max: float) -> torch.Tensor:
    if not scales.numel():
        return scales.sum()
    big = torch.relu(scales.norm(dim=1) - s_max) ** 2
    small = torch.relu(s_min - scales.min(dim=1).values) ** 2
    return (big + small).mean()


def overlap(centers: torch.Tensor, covariances: torch.Tensor, k: int = 8) -> torch.Tensor:
    """Sum over near pairs of exp(-|mu_i - mu_j|^2 / (2 (r_i + r_j)^2)), r = sqrt(tr Sigma) / 3."""
    n = centers.shape[0]
    if n < 2:
        return centers.sum() * 0.0
    from scipy.spatial import cKDTree

    c = centers.detach().cpu().numpy()
    kk = min(k + 1, n)
    _, idx = cKDTree(c).query(c, k=kk)
    i = torch.arange(n).repeat_interleave(kk - 1)
    j = torch.as_tensor(idx[:, 1:].reshape(-1), dtype=torch.long)
    keep = i < j
    i, j = i[keep], j[keep]
    r = torch.sqrt(torch.diagonal(covariances, dim1=1, dim2=2).sum(1)) / 3.0
    d2 = ((centers[i] - centers[j]) ** 2).sum(1)
    return torch.exp(-d2 / (2 * (r[i] + r[j]) ** 2)).sum()
