"""Initial Gaussians.

- ``init_from_data`` (default): centres drawn from occupied voxels with
  probability proportional to their (background-relative) intensity above a
  noise margin, jittered
  within the voxel; isotropic scales from local structure (half the mean
  distance to the 3 nearest other centres, in voxels); amplitudes from the
  voxel value, then one least-squares rescale against the volume.
- ``init_uniform`` (paper): centres uniform over the volume extent, covariance
  ``(sigma * n_a)^2`` per axis (the paper's 0.01 I on the normalised domain),
  amplitudes from the least-squares rescale.

All arrays are voxel units, ZYX; amplitudes in model units, clipped to (0, 0.95]
so the sigmoid parameterisation can represent them.
"""

from __future__ import annotations

import numpy as np

from .splat import Lattice, splat_numpy

AMP_MAX = 0.95


def _isotropic(n):
    q = np.zeros((n, 4), np.float64)
    q[:, 0] = 1.0
    return q


def _prec_half(scales):
    inv = 1.0 / scales**2
    prec6 = np.zeros((len(scales), 6))
    prec6[:, :3] = inv
    return prec6, 3.0 * scales


def least_squares_scale(target, centers, scales, amps, lattice: Lattice) -> float:
    """alpha minimising |alpha F - target|^2 on ``lattice`` (F = Gaussian sum with ``amps``)."""
    if len(centers) == 0:
        return 1.0
    prec6, half = _prec_half(scales)
    f = splat_numpy(centers, prec6, amps, half, lattice).astype(np.float64).ravel()
    t = np.asarray(target[lattice.slices], np.float64).ravel()
    den = float(f @ f)
    return float(f @ t) / den if den > 0 else 1.0


def init_from_data(target, occupied, n, rng, sigma_min=0.7, sigma_max=8.0, lattice=None, floor=0.0):
    """(centers, scales, quaternions, amplitudes) for ``n`` Gaussians from the data.

    Centres are drawn from the ``occupied`` voxels with probability proportional to
    ``target - floor`` (model units; ``floor`` a noise margin, so voxels just above the noise
    are rarely drawn)."""
    shape = target.shape
    idx = np.flatnonzero(occupied)
    if n == 0 or idx.size == 0:
        z = np.zeros((0, 3))
        return z, z.copy(), np.zeros((0, 4)), np.zeros(0)
    p = np.clip(target.ravel()[idx].astype(np.float64) - floor, 0, None) + 1e-6
    p /= p.sum()
    pick = rng.choice(idx, size=n, replace=idx.size < n, p=p)
    centers = np.stack(np.unravel_index(pick, shape), 1).astype(np.float64)
    centers += rng.uniform(-0.5, 0.5, size=centers.shape)
    centers = np.clip(centers, -0.5, np.asarray(shape) - 0.5)
    if n > 3:
        from scipy.spatial import cKDTree

        d, _ = cKDTree(centers).query(centers, k=4)
        sigma = 0.5 * d[:, 1:].mean(1)
    else:
        sigma = np.full(n, 2.0)
    sigma = np.clip(sigma, sigma_min, sigma_max)
    scales = np.repeat(sigma[:, None], 3, 1)
    amps = np.clip(target.ravel()[pick].astype(np.float64), 0.01, AMP_MAX)
    lat = lattice or Lattice.make(shape)
    alpha = least_squares_scale(target, centers, scales, amps, lat)
    amps = np.clip(amps * max(alpha, 1e-3), 1e-3, AMP_MAX)
    return centers, scales, _isotropic(n), amps


def init_uniform(target, n, rng, sigma=0.1, lattice=None):
    """The paper's initialisation: uniform centres, sigma * extent per axis (voxels)."""
    shape = np.asarray(target.shape, np.float64)
    if n == 0:
        z = np.zeros((0, 3))
        return z, z.copy(), np.zeros((0, 4)), np.zeros(0)
    centers = rng.uniform(-0.5, shape - 0.5, size=(n, 3))
    scales = np.repeat((sigma * shape)[None], n, 0)
    amps = np.full(n, 0.1)
    lat = lattice or Lattice.make(target.shape, stride=(2, 4, 4))
    alpha = least_squares_scale(target, centers, scales, amps, lat)
    amps = np.clip(amps * max(alpha, 1e-3), 1e-3, AMP_MAX)
    return centers, scales, _isotropic(n), amps
