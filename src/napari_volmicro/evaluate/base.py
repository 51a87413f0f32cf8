"""The interface every evaluator implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import numpy as np

from .. import background as bgfield

if TYPE_CHECKING:
    from ..gaussians import GaussianVolume
    from ..region import RegionGrid


class Evaluator(ABC):
    """Evaluates the Gaussian sum (plus the background field) in model units.

    Inputs are already validated by ``GaussianVolume``: points are (M, 3)
    float64 voxel coordinates (ZYX), grids are ``RegionGrid`` inside the volume,
    ``k`` is a positive int (only the KNN evaluator uses it).
    """

    name: str = "?"

    @abstractmethod
    def evaluate_model(self, gv: GaussianVolume, points: np.ndarray, k: int) -> np.ndarray:
        """(M,) float32 model values at ``points``."""

    def decode_model(self, gv: GaussianVolume, grid: RegionGrid, k: int) -> np.ndarray:
        """float32 model values on ``grid`` (shape ``grid.shape``).

        Default: evaluate the grid's points; subclasses do better.
        """
        return self.evaluate_model(gv, grid.points(), k).reshape(grid.shape)

    def decode(self, gv: GaussianVolume, grid: RegionGrid, k: int) -> np.ndarray:
        """Values on ``grid`` in original units and dtype."""
        return gv.mapping.to_original(self.decode_model(gv, grid, k))


def add_background_points(gv: GaussianVolume, points: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` plus the background field at ``points`` (no-op without a field)."""
    if gv.background is None:
        return values
    return values + bgfield.sample_points(gv.background, gv.shape, points)


def add_background_grid(gv: GaussianVolume, grid: RegionGrid, values: np.ndarray) -> np.ndarray:
    """``values`` (grid-shaped) plus the background field on ``grid``, in place when possible."""
    if gv.background is None:
        return values
    values += bgfield.sample_region(gv.background, gv.shape, grid.axis_coords())
    return values
