"""Brute-force reference evaluator and the brute-force forms of both KNN rules.

Plain numpy in float64, no spatial index, no approximation beyond the 3-sigma
cutoff that defines the model. O(M N): use them on small problems, as the
oracles the fast evaluators are tested against.

- ``gaussian_sum``: every Gaussian within 3 sigma (the ``reference`` and
  ``dense`` evaluators).
- ``top_k_sum``: the ``knn`` rule (``knn.py``): the K largest ``|contribution|``
  among those within 3 sigma, ties to the lower index.
- ``nearest_centres_sum``: the ``knn-centres`` rule (``knn_centres.py``):
  those within 3 sigma whose centre is among the K nearest (Euclidean, ties to
  the lower index).
"""

from __future__ import annotations

import numpy as np

from ..gaussians import CUTOFF_D2
from .base import Evaluator, add_background_points

#: Work per chunk, in point-Gaussian pairs (bounds memory to ~100 MB).
_PAIRS_PER_CHUNK = 2_000_000


def _chunks(points, n):
    step = max(1, _PAIRS_PER_CHUNK // max(n, 1))
    return range(0, len(points), step), step


def mahalanobis2(points, centers, precisions) -> np.ndarray:
    """(M, N) float64 squared Mahalanobis distances ``d_i^2`` of (M, 3) points from N Gaussians."""
    d = np.asarray(points, np.float64)[:, None, :] - np.asarray(centers, np.float64)[None, :, :]
    return np.einsum("mni,nij,mnj->mn", d, precisions, d)


def contributions(points, centers, precisions, amplitudes, d2=None) -> np.ndarray:
    """(M, N) float64 ``w_i exp(-d_i^2 / 2)``, zero where ``d_i^2 > 9`` (``d2``: ``mahalanobis2`` if known)."""
    d2 = mahalanobis2(points, centers, precisions) if d2 is None else d2
    return np.where(d2 <= CUTOFF_D2, np.exp(-0.5 * d2), 0.0) * np.asarray(amplitudes, np.float64)


def gaussian_sum(points, centers, precisions, amplitudes) -> np.ndarray:
    """Exact 3-sigma-cut Gaussian sum at (M, 3) points; float64 (M,)."""
    points = np.asarray(points, np.float64)
    out = np.zeros(len(points), np.float64)
    if len(centers) == 0 or len(points) == 0:
        return out
    starts, step = _chunks(points, len(centers))
    for s in starts:
        out[s : s + step] = contributions(points[s : s + step], centers, precisions, amplitudes).sum(axis=1)
    return out


def _sum_ranked(c, covered, key, k):
    """Per row: sum of ``c`` over the ``k`` covered entries that sort first by ``key`` (then column,
    so columns must be in Gaussian-index order)."""
    m, n = c.shape
    idx = np.broadcast_to(np.arange(n), (m, n))
    key = np.where(covered, key, np.inf)  # uncovered entries rank last
    order = np.lexsort((idx, key), axis=1)[:, :k]
    keep = np.zeros((m, n), bool)
    np.put_along_axis(keep, order, True, axis=1)
    return np.where(keep & covered, c, 0.0).sum(axis=1)


def top_k_sum(points, centers, precisions, amplitudes, k) -> np.ndarray:
    """The ``knn`` rule at (M, 3) points: per point, the sum of the ``k`` contributions of
    largest magnitude among the Gaussians within 3 sigma (ties: lower index); float64 (M,)."""
    points = np.asarray(points, np.float64)
    out = np.zeros(len(points), np.float64)
    if len(centers) == 0 or len(points) == 0:
        return out
    starts, step = _chunks(points, len(centers))
    precisions = np.asarray(precisions, np.float64)
    for s in starts:
        p = points[s : s + step]
        d2 = mahalanobis2(p, centers, precisions)
        covered = d2 <= CUTOFF_D2
        c = contributions(p, centers, precisions, amplitudes, d2)
        cols = np.flatnonzero(covered.any(axis=0))  # only Gaussians that reach some point (order kept)
        out[s : s + step] = _sum_ranked(c[:, cols], covered[:, cols], -np.abs(c[:, cols]), k)
    return out


def nearest_centres_sum(points, centers, precisions, amplitudes, k) -> np.ndarray:
    """The ``knn-centres`` rule at (M, 3) points: per point, the sum over the Gaussians within
    3 sigma whose centres are among the ``k`` nearest (float64 Euclidean; ties: lower index)."""
    points = np.asarray(points, np.float64)
    out = np.zeros(len(points), np.float64)
    if len(centers) == 0 or len(points) == 0:
        return out
    centers = np.asarray(centers, np.float64)
    n = len(centers)
    idx = np.arange(n)
    starts, step = _chunks(points, n)
    for s in starts:
        p = points[s : s + step]
        e2 = ((p[:, None, :] - centers[None]) ** 2).sum(axis=2)
        order = np.lexsort((np.broadcast_to(idx, e2.shape), e2), axis=1)[:, :k]
        near = np.zeros(e2.shape, bool)
        np.put_along_axis(near, order, True, axis=1)
        out[s : s + step] = np.where(near, contributions(p, centers, precisions, amplitudes), 0.0).sum(axis=1)
    return out


class ReferenceEvaluator(Evaluator):
    name = "reference"

    def evaluate_model(self, gv, points, k):
        vals = gaussian_sum(points, gv.centers, gv.precisions(), gv.amplitudes)
        return add_background_points(gv, points, vals).astype(np.float32)
