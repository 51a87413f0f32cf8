"""The enhancement layer: what the Gaussians do not hold (texture, noise, fine residual), coded per block.

The Gaussians stay the base layer: regions, points, napari Browse and the
ellipsoids work from them alone. A model may carry a ``ResidualLayer``
(``GaussianVolume.residual``, stored as the ``.vmg`` residual section) that
``decode(..., layers="all")`` adds to the exact base decode, reading only
the blocks a region touches:

- a **transform stage** (rate-distortion): a 3D CDF 9/7 wavelet of the
  residual, dead-zone quantised, context-coded (``wavelet_coder``), so quality
  keeps rising with bits (``volmicro compress --bpp``: ``hybrid.py`` splits the
  budget between the Gaussians and this stage);
- a **correction stage** (error-bounded archival): what is left rounded voxel
  by voxel to a step just under ``2 E + 1``, so every voxel decodes within
  ``E`` of the original (``volmicro compress --max-error``).

Modules: ``wavelet`` (transform), ``entropy`` (constriction range coding
with a fixed codebook), ``contexts`` / ``_kernels`` (coding contexts),
``wavelet_coder`` and ``correction`` (the two stages' block coders), ``blob``
(byte layout), ``layer`` (``ResidualLayer``, ``open_layer``), ``encode``
(fitting a layer to a byte budget or an error bound), ``noise`` (noise
estimate), ``hybrid`` (training the base and adding the layer).
Nothing here imports Qt or napari; numba and constriction load on first use.
"""

from __future__ import annotations

import numpy as np

from .layer import ResidualLayer, open_layer

__all__ = ["ResidualLayer", "decode_with_layer", "finish", "open_layer"]


def finish(values: np.ndarray, mapping) -> np.ndarray:
    """Original-unit float values -> the model's dtype: rounded half to even and clipped for integer
    dtypes (as ``IntensityMapping.to_original``), cast for float ones."""
    values = np.asarray(values, np.float64)
    if mapping.is_integer:
        lo, hi = mapping.clip_range
        values = np.clip(np.rint(values), lo, hi)
    return values.astype(mapping.dtype, copy=False)


def decode_with_layer(model, layer: ResidualLayer, evaluator, grid, k: int, measure: bool = False):
    """The base decode of ``grid`` (``evaluator``, exact) plus ``layer`` on the same grid, in the
    model's dtype; with ``measure``, also the ``DecodeLoss`` against the exact decode (none: the
    evaluator is exact). ``GaussianVolume.decode`` calls this for ``layers="all"``."""
    base = model.mapping.to_original_float(evaluator.decode_model(model, grid, k))
    block = finish(base + layer.decode(grid.slices), model.mapping)
    if not measure:
        return block, None
    from ..evaluate.base import DecodeLoss, block_peak

    return block, DecodeLoss(grid.size, 0, 0.0, 0.0, block_peak(block))
