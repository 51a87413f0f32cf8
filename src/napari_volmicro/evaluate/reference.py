"""Brute-force reference evaluator: every Gaussian against every point.

Plain numpy in float64, no spatial index, no approximation beyond the 3-sigma
cutoff that defines the model. O(M N): use it on small problems, as the oracle
the fast evaluators are tested against.
"""

from __future__ import annotations

import numpy as np

from ..gaussians import CUTOFF_D2
from .base import Evaluator, add_background_points

#: Work per chunk, in point-Gaussian pairs (bounds memory to ~100 MB).
_PAIRS_PER_CHUNK = 2_000_000


def gaussian_sum(points, centers, precisions, amplitudes) -> np.ndarray:
    """Exact 3-sigma-cut Gaussian sum at (M, 3) points; float64 (M,)."""
    points = np.asarray(points, np.float64)
    out = np.zeros(len(points), np.float64)
    n = len(centers)
    if n == 0 or len(points) == 0:
        return out
    centers = np.asarray(centers, np.float64)
    amplitudes = np.asarray(amplitudes, np.float64)
    chunk = max(1, _PAIRS_PER_CHUNK // n)
    for s in range(0, len(points), chunk):
        d = points[s : s + chunk, None, :] - centers[None, :, :]  # (m, n, 3)
        d2 = np.einsum("mni,nij,mnj->mn", d, precisions, d)
        contrib = np.where(d2 <= CUTOFF_D2, np.exp(-0.5 * d2), 0.0)
        out[s : s + chunk] = contrib @ amplitudes
    return out


class ReferenceEvaluator(Evaluator):
    name = "reference"

    def evaluate_model(self, gv, points, k):
        vals = gaussian_sum(points, gv.centers, gv.precisions(), gv.amplitudes)
        return add_background_points(gv, points, vals).astype(np.float32)
