"""The interface every evaluator implements."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import background as bgfield

if TYPE_CHECKING:
    from ..gaussians import GaussianVolume
    from ..region import RegionGrid


@dataclass(frozen=True)
class DecodeLoss:
    """How one decode differs from the exact decode of the same grid (the dense evaluator's).

    Differences are of the model values (before rounding to the output dtype),
    in original units (model units times ``|mapping.scale|``). voxels: voxels
    decoded; changed: voxels whose value differs; sum_sq: sum of squared
    differences; max_abs: the largest; peak: max - min of the decoded block
    (original units), the peak of ``psnr``.
    """

    voxels: int
    changed: int
    sum_sq: float
    max_abs: float
    peak: float

    @property
    def exact(self) -> bool:
        return self.changed == 0

    @property
    def psnr(self) -> float:
        """PSNR (dB) of the decode against the exact one (inf when equal)."""
        if self.sum_sq <= 0.0:
            return math.inf
        return 10.0 * math.log10(max(self.peak, 1e-300) ** 2 * self.voxels / self.sum_sq)


def block_peak(block: np.ndarray) -> float:
    """max - min of a decoded block (float)."""
    return float(np.max(block)) - float(np.min(block)) if block.size else 0.0


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

    def decode_measured(self, gv: GaussianVolume, grid: RegionGrid, k: int) -> tuple[np.ndarray, DecodeLoss]:
        """``decode`` and how it differs from the exact decode (``DecodeLoss``).

        Exact evaluators report no difference; approximate ones override this.
        """
        block = self.decode(gv, grid, k)
        return block, DecodeLoss(grid.size, 0, 0.0, 0.0, block_peak(block))


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
