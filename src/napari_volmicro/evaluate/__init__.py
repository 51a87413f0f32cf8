"""Evaluators: turn a ``GaussianVolume`` into values at points or on voxel grids.

Three implementations share one interface (``Evaluator`` in ``base.py``):

- ``reference``: every Gaussian against every point, plain numpy. Slow; the oracle.
- ``knn``: the paper's K nearest Gaussian centres (faiss), for points and regions.
- ``dense``: each Gaussian's exact 3-sigma footprint gathered onto the grid
  (numba, parallel over Z slabs). The fast path for blocks and whole volumes.

Modules are imported on first use so that importing the package stays light.
"""

from __future__ import annotations

from importlib import import_module

from ..errors import VolmicroError
from .base import Evaluator

EVALUATORS = {
    "reference": ("napari_volmicro.evaluate.reference", "ReferenceEvaluator"),
    "knn": ("napari_volmicro.evaluate.knn", "KnnEvaluator"),
    "dense": ("napari_volmicro.evaluate.dense", "DenseEvaluator"),
}

_instances: dict[str, Evaluator] = {}


def get_evaluator(name: str) -> Evaluator:
    """The evaluator called ``name`` (``"dense"``, ``"knn"`` or ``"reference"``)."""
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


__all__ = ["EVALUATORS", "Evaluator", "get_evaluator"]
