"""The linear-predictive form of the error-bounded correction stage.

Inside each block, voxels are visited in raster order (Z slowest, X fastest)
and each is predicted as a fixed linear combination of the ``N_WEIGHTS``
voxels of its causal 3 x 3 x 3 neighbourhood that were rebuilt before it
(``OFFSETS``: the voxel at ``(z - dz, y - dy, x - dx)``; a neighbour outside
the block counts as 0, so every block decodes on its own). Only the rounded
prediction error is coded: ``q = rint((r - p) / D)``, rebuilt as
``p + q D`` (float64, the same operations in the same order at both ends),
so every voxel ends within ``D / 2`` of ``r`` like the plain stage.

The indices ``q`` are entropy-coded exactly as the plain correction stage
codes its own (``correction.encode``: contexts from decoded indices only), so
a decoder first decodes a block's indices, then rebuilds it in one compiled
pass (``rebuild``). The weights are one set per layer, fitted by least
squares (``fit_weights``: first on the residual itself, then again on the
values a first pass rebuilt, which is what the decoder will predict from)
and stored in the layer's tables as float64.

Why: after a smooth base the residual of real volumes is correlated from
voxel to voxel (detector noise after resampling or deconvolution, texture);
on the shared nuclei volume its neighbours correlate at 0.5 along every axis.
Predicting from the full causal neighbourhood removes more of that than the
hierarchical interpolation of ``predictive.py`` (SZ3's scheme), whose coarse
levels predict across gaps of 2 to 32 voxels: 9 to 13% fewer bytes at 1 to 4
noise sigmas on the shared volumes (``docs/enhancement-layer.md``).
"""

from __future__ import annotations

import numpy as np

#: the causal neighbourhood: (dz, dy, dx) of the neighbour at (z - dz, y - dy, x - dx)
OFFSETS = np.array(
    [(0, 0, 1), (0, 1, -1), (0, 1, 0), (0, 1, 1)] + [(1, dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)],
    np.int64,
)
N_WEIGHTS = len(OFFSETS)
#: largest |weight| a layer may store (a least-squares fit of real residuals stays well below 2)
MAX_WEIGHT = 16.0
#: ridge added to the normal equations, relative to their mean diagonal (keeps flat blocks solvable)
RIDGE = 1e-9


def quantize_block(r: np.ndarray, w: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """(int64 indices ``q``, float64 rebuilt values) of one block's residual ``r`` (ZYX) with weights ``w``
    (kernel: ``_kernels.linear_quantize``)."""
    from . import _kernels as K

    return K.linear_quantize(np.ascontiguousarray(r, np.float64), np.asarray(w, np.float64), OFFSETS, float(step))


def rebuild(q: np.ndarray, w: np.ndarray, step: float) -> np.ndarray:
    """The decoder's pass: float64 values of a block from its indices ``q`` (what ``quantize_block``
    rebuilt; kernel: ``_kernels.linear_rebuild``)."""
    from . import _kernels as K

    return K.linear_rebuild(np.ascontiguousarray(q, np.int64), np.asarray(w, np.float64), OFFSETS, float(step))


def rebuild_reference(q: np.ndarray, w: np.ndarray, step: float) -> np.ndarray:
    """Plain definition of ``rebuild`` (slow: tests only)."""
    nz, ny, nx = q.shape
    rec = np.zeros(q.shape, np.float64)
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                p = 0.0
                for (dz, dy, dx), wk in zip(OFFSETS.tolist(), np.asarray(w, np.float64).tolist()):
                    zz, yy, xx = z - dz, y - dy, x - dx
                    if zz >= 0 and 0 <= yy < ny and 0 <= xx < nx:
                        p += wk * rec[zz, yy, xx]
                rec[z, y, x] = p + float(q[z, y, x]) * step
    return rec


def _solve(ata: np.ndarray, atb: np.ndarray) -> np.ndarray:
    scale = float(np.trace(ata)) / N_WEIGHTS
    if not scale > 0 or not np.isfinite(scale):
        return np.zeros(N_WEIGHTS)
    w = np.linalg.solve(ata + RIDGE * scale * np.eye(N_WEIGHTS), atb)
    return np.clip(np.nan_to_num(w), -MAX_WEIGHT, MAX_WEIGHT)


def fit_weights(targets, sources) -> np.ndarray:
    """Least-squares weights predicting each block of ``targets`` from ``sources`` (iterables of blocks,
    same shapes, float64) at the causal neighbours; zeros where there is nothing to fit, clipped to
    ``MAX_WEIGHT``."""
    from . import _kernels as K

    ata = np.zeros((N_WEIGHTS, N_WEIGHTS))
    atb = np.zeros(N_WEIGHTS)
    for t, s in zip(targets, sources):
        K.linear_normal_equations(np.ascontiguousarray(t, np.float64), np.ascontiguousarray(s, np.float64),
                                  OFFSETS, ata, atb)
    return _solve(ata, atb)


def quantize(blocks, step: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """Fit the layer's weights to ``blocks`` (the residual of each block, float64 ZYX, a list) and
    quantise them: (weights, [int64 indices of each block]). The second fit predicts from what a
    first pass rebuilt (one block at a time), as the decoder will."""
    blocks = [np.ascontiguousarray(b, np.float64) for b in blocks]
    w = fit_weights(blocks, blocks)
    w = fit_weights(blocks, (quantize_block(b, w, step)[1] for b in blocks))
    return w, [quantize_block(b, w, step)[0] for b in blocks]
