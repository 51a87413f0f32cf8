"""Evaluators: turn a ``GaussianVolume`` into values at points or on voxel grids.

Four implementations share one interface (``Evaluator`` in ``base.py``):

- ``dense``: each Gaussian's exact 3-sigma footprint gathered onto the grid
  (numba, parallel over Z planes). The exact sum; the fast path for blocks
  and whole volumes.
- ``knn`` (default for browsing and points): at each voxel, the K Gaussians
  that contribute most (largest ``|w exp(-d^2/2)|`` among those within
  3 sigma). Equal to the exact sum wherever at most K Gaussians reach a voxel;
  definition in ``knn.py``.
- ``knn-centres``: the paper's rule, the K nearest centres (faiss). Kept for
  comparison; it loses several dB against the exact sum on trained models.
- ``reference``: every Gaussian against every point, plain numpy. Slow; the
  oracle (``reference.py`` also holds brute-force versions of both KNN rules).

Modules are imported on first use so that importing the package stays light.
"""

from __future__ import annotations

from importlib import import_module

from ..errors import VolmicroError
from .base import DecodeLoss, Evaluator

#: K of the KNN evaluators when none is given: ``knn`` decodes within 0.1 dB of the exact decode's
#: psnr_full at this K on every trained model measured (``benchmarks/knn_agreement.py``). At K = 32
#: the sparse neuron model (rivuletpy, 0.073 bpp), where voxels are reached by up to ~90 Gaussians,
#: was at -0.09 dB; at K = 64 the bead model at 0.3 bpp (1,394 Gaussians on one bead, 64^3) lost
#: 17.9 dB and at 128 2.3 dB; at 256 every model measured decodes exactly. ``knn`` costs less as K
#: grows (fewer voxels to re-rank: bead whole volume 88 ms at K = 64, 30 ms at 256).
DEFAULT_K = 256

EVALUATORS = {
    "dense": ("napari_volmicro.evaluate.dense", "DenseEvaluator"),
    "knn": ("napari_volmicro.evaluate.knn", "KnnEvaluator"),
    "knn-centres": ("napari_volmicro.evaluate.knn_centres", "KnnCentresEvaluator"),
    "reference": ("napari_volmicro.evaluate.reference", "ReferenceEvaluator"),
}

#: One line per evaluator, for command-line help and the napari widget.
DESCRIPTIONS = {
    "dense": "exact sum of every Gaussian within 3 sigma (fastest for blocks)",
    "knn": "the K Gaussians contributing most at each voxel (exact where at most K reach it)",
    "knn-centres": "the paper's K nearest centres (for comparison: loses dB on trained models)",
    "reference": "brute force, every Gaussian at every voxel (slow; the test oracle)",
}

_instances: dict[str, Evaluator] = {}


def get_evaluator(name: str) -> Evaluator:
    """The evaluator called ``name`` (one of ``EVALUATORS``)."""
    if isinstance(name, Evaluator):
        return name
    if name not in EVALUATORS:
        raise VolmicroError(
            f"unknown evaluator {name!r}; expected one of {', '.join(sorted(EVALUATORS))}"
        )
    if name not in _instances:
        module, cls = EVALUATORS[name]
        _instances[name] = getattr(import_module(module), cls)()
    return _instances[name]


__all__ = ["DEFAULT_K", "DESCRIPTIONS", "EVALUATORS", "DecodeLoss", "Evaluator", "get_evaluator"]
