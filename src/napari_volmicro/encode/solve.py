"""Closed-form amplitudes: the model is linear in the Gaussians' amplitudes and in
the background field, so for fixed centres and shapes the best of both is a
weighted least-squares problem on a lattice of voxels::

    minimise  sum_v W_v (sum_i w_i g_i(v) + (F f)_v - t_v)^2

over the amplitudes ``w`` (N,) and the field nodes ``f`` (the coarse grid of
``background.py``, ``F`` its trilinear interpolation onto the lattice). It is
solved by preconditioned conjugate gradients on the normal equations (CGLS):
each iteration costs one forward splat (``A p``) and one backward pass
(``A^T r``) with the training kernels, about one training step. The
preconditioner is each column's squared norm: ``W (pi^1.5 s_1 s_2 s_3) /
(lattice voxels per voxel)`` for a Gaussian (the integral of ``g^2`` with the
local mean weight), exact for the field's columns.

Units: model units (background 0, brightest voxel ~1), voxels, ZYX.
"""

from __future__ import annotations

import math

import numpy as np

from . import _kernels
from .field import axis_matrix
from .splat import Lattice, n_threads


class FieldOperator:
    """The background field's trilinear interpolation ``F`` on one lattice, and its transpose."""

    def __init__(self, field_shape, volume_shape, lattice: Lattice):
        self.mats = [
            axis_matrix(g, n, o + s * np.arange(m, dtype=np.float64)).double().numpy()
            for g, n, o, s, m in zip(field_shape, volume_shape, lattice.offset, lattice.stride, lattice.shape)
        ]
        self.field_shape = tuple(int(g) for g in field_shape)
        self.lattice_shape = lattice.shape

    def apply(self, f: np.ndarray) -> np.ndarray:
        """Field nodes (gz * gy * gx,) -> lattice values (flat)."""
        mz, my, mx = self.mats
        t = np.einsum("zi,ijk->zjk", mz, f.reshape(self.field_shape))
        t = np.einsum("yj,zjk->zyk", my, t)
        t = np.einsum("xk,zyk->zyx", mx, t)
        return t.reshape(-1)

    def adjoint(self, r: np.ndarray) -> np.ndarray:
        """Lattice values (flat) -> field nodes (flat): ``F^T r``."""
        mz, my, mx = self.mats
        t = r.reshape(self.lattice_shape)
        t = np.einsum("xk,zyx->zyk", mx, t)
        t = np.einsum("yj,zyk->zjk", my, t)
        t = np.einsum("zi,zjk->ijk", mz, t)
        return t.reshape(-1)

    def column_norms(self, weight: np.ndarray) -> np.ndarray:
        """``diag(F^T W F)`` (exact)."""
        mz, my, mx = (m * m for m in self.mats)
        t = weight.reshape(self.lattice_shape).astype(np.float64)
        t = np.einsum("xk,zyx->zyk", mx, t)
        t = np.einsum("yj,zyk->zjk", my, t)
        t = np.einsum("zi,zjk->ijk", mz, t)
        return t.reshape(-1)


def _forward(centers, prec6, amps, half, lattice: Lattice) -> np.ndarray:
    off, stride, shape = lattice.arrays()
    return _kernels.splat_forward(centers, prec6, amps, half, off, stride, shape, n_threads()).astype(np.float64)


def _adjoint(centers, prec6, amps, half, lattice: Lattice, r: np.ndarray) -> np.ndarray:
    off, stride, shape = lattice.arrays()
    acc = _kernels.splat_backward(centers, prec6, amps, half, off, stride, shape, np.ascontiguousarray(r, np.float32))
    return acc[:, 0]


def solve_linear(centers, prec6, half, scales, lattice: Lattice, target, weight, *, amps0, field0=None,
                 field_op: FieldOperator | None = None, iterations: int = 12, nonneg: bool = True,
                 amp_max: float = 0.95):
    """Least-squares amplitudes (and field nodes) on ``lattice``, warm-started at ``amps0``/``field0``.

    centers (N, 3) voxels, prec6 (N, 6), half (N, 3) 3-sigma half-widths, scales (N, 3) voxels;
    target, weight: flat float32 over the lattice. ``nonneg``: amplitudes are clipped to
    ``[0, amp_max]`` after the solve (the sigmoid parameterisation's range); otherwise to
    ``[-amp_max, amp_max]``. Returns ``(amps, field, mse_before, mse_after)`` (weighted).
    """
    c = np.ascontiguousarray(centers, np.float64)
    p6 = np.ascontiguousarray(prec6, np.float64)
    h = np.ascontiguousarray(half, np.float64)
    n = len(c)
    w = weight.astype(np.float64)
    t = target.astype(np.float64)
    nf = 0 if field_op is None else int(np.prod(field_op.field_shape))
    ones = np.ones(n, np.float64)
    # diagonal preconditioner (column norms of W^1/2 [A F])
    dens = 1.0 / float(np.prod(lattice.stride))
    wmean = float(w.sum() / max(1, w.size))
    col = np.empty(n + nf)
    col[:n] = wmean * math.pi**1.5 * np.prod(np.asarray(scales, np.float64), axis=1) * dens
    if nf:
        col[n:] = field_op.column_norms(w)
    col = np.maximum(col, 1e-12 * max(1e-30, col.max(initial=0.0)))
    dinv = 1.0 / np.sqrt(col)

    def apply(x):  # [A F] x  (lattice, unweighted)
        out = _forward(c, p6, x[:n], h, lattice) if n else np.zeros(lattice.size)
        if nf:
            out += field_op.apply(x[n:])
        return out

    def adjoint(r):  # [A F]^T r
        g = np.empty(n + nf)
        if n:
            g[:n] = _adjoint(c, p6, ones, h, lattice, r)
        if nf:
            g[n:] = field_op.adjoint(r)
        return g

    x = np.concatenate([np.asarray(amps0, np.float64), np.zeros(nf) if field0 is None else np.asarray(field0, np.float64).reshape(-1)])
    res = t - apply(x)  # data-space residual
    mse0 = float((w * res * res).sum())
    # CGLS on y = D^1/2 x: minimise |W^1/2 (A D^-1/2 y - b)|
    s = dinv * adjoint(w * res)
    p = s.copy()
    gamma = float(s @ s)
    obj = mse0
    for _ in range(iterations):
        if gamma <= 0:
            break
        q = apply(dinv * p)
        qq = float((w * q * q).sum())
        if qq <= 0:
            break
        alpha = gamma / qq
        step = alpha * dinv * p
        res_new = res - alpha * q
        obj_new = float((w * res_new * res_new).sum())
        if not obj_new < obj:  # converged to the kernels' float32 rounding: CG would only drift
            break
        x += step
        res, obj = res_new, obj_new
        s = dinv * adjoint(w * res)
        g_new = float(s @ s)
        p = s + (g_new / gamma) * p
        gamma = g_new
    amps = x[:n]
    amps = np.clip(amps, 0.0 if nonneg else -amp_max, amp_max)
    x[:n] = amps
    res = t - apply(x)
    mse1 = float((w * res * res).sum())
    return amps, (x[n:].copy() if nf else None), mse0, mse1


__all__ = ["FieldOperator", "solve_linear"]
