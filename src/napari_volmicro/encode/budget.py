"""Size budgets: bytes allowed, Gaussians that fit, and the final prune.

File sizes come from ``container.file_size`` (the bytes ``save`` writes).
Until that exists, ``estimate_file_size`` is used: 22 bytes per Gaussian plus
a header and the background field (float32 nodes), kept in this one place.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from ..gaussians import GaussianVolume

BYTES_PER_GAUSSIAN = 22
#: conservative per-file overhead of the estimate (header, tables, checksums)
ESTIMATE_OVERHEAD = 256


def estimate_file_size(n_gaussians: int, background_nodes: int = 0) -> int:
    extra = 16 + 4 * background_nodes if background_nodes else 0
    return ESTIMATE_OVERHEAD + BYTES_PER_GAUSSIAN * int(n_gaussians) + extra


def file_size(gv: GaussianVolume) -> int:
    """Bytes ``gv.save`` writes (container), or the estimate when the container is missing."""
    try:
        from ..container import file_size as _fs
    except ImportError:
        nodes = 0 if gv.background is None else int(gv.background.size)
        return estimate_file_size(gv.n_gaussians, nodes)
    return int(_fs(gv))


def budget_bytes(n_voxels: int, itemsize: int, *, bpp=None, ratio=None, gaussians=None) -> int | None:
    """Bytes allowed by ``bpp`` or ``ratio`` (None for ``gaussians`` budgets, handled by count)."""
    given = [k for k, v in (("bpp", bpp), ("ratio", ratio), ("gaussians", gaussians)) if v is not None]
    if len(given) > 1:
        raise InputError(f"give at most one of bpp, ratio, gaussians (got {', '.join(given)})")
    for name, v in (("bpp", bpp), ("ratio", ratio)):
        if v is not None:
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v) or v <= 0:
                raise InputError(f"{name} must be a positive number, got {v!r}")
    if gaussians is not None:
        if isinstance(gaussians, bool) or not isinstance(gaussians, (int, np.integer)) or gaussians < 0:
            raise InputError(f"gaussians must be a non-negative integer, got {gaussians!r}")
        return None
    if ratio is not None:
        return int(math.floor(n_voxels * itemsize / ratio))
    if bpp is None:
        from .config import DEFAULT_BPP

        bpp = DEFAULT_BPP
    return int(math.floor(bpp * n_voxels / 8.0))


def gaussians_for_bytes(template: GaussianVolume, budget: int) -> int:
    """Largest N such that a model like ``template`` with N Gaussians fits in ``budget`` bytes."""
    empty = template.subset(np.zeros(0, np.int64))
    base = file_size(empty)
    if budget < base:
        raise InputError(
            f"size budget of {budget} bytes is smaller than an empty model file ({base} bytes, "
            "header and background field); ask for a larger --bpp/--ratio"
        )
    n = (budget - base) // BYTES_PER_GAUSSIAN
    return int(max(0, n))


def importance(gv: GaussianVolume) -> np.ndarray:
    """Mass of each Gaussian: amplitude x volume of its ellipsoid (model units x voxel^3)."""
    return gv.amplitudes.astype(np.float64) * np.prod(gv.scales.astype(np.float64), axis=1)


def prune_to_count(gv: GaussianVolume, n: int) -> GaussianVolume:
    """Keep the ``n`` Gaussians of largest mass (order preserved)."""
    if gv.n_gaussians <= n:
        return gv
    keep = np.sort(np.argsort(-importance(gv), kind="stable")[:n])
    return gv.subset(keep)


def fit_budget(gv: GaussianVolume, budget: int | None) -> GaussianVolume:
    """Drop least-massive Gaussians until ``file_size(gv) <= budget`` (no-op for None)."""
    if budget is None:
        return gv
    size = file_size(gv)
    while size > budget and gv.n_gaussians:
        excess = size - budget
        drop = max(1, math.ceil(excess / BYTES_PER_GAUSSIAN))
        gv = prune_to_count(gv, max(0, gv.n_gaussians - drop))
        size = file_size(gv)
    return gv


def field_shape(nodes: int, volume_shape) -> tuple[int, int, int] | None:
    """A grid of at most ``nodes`` nodes with spacing roughly equal in voxels (None if < 8 nodes)."""
    if nodes < 8:
        return None
    shape = np.asarray(volume_shape, np.float64)
    f = (nodes / shape.prod()) ** (1 / 3)
    g = np.maximum(2, np.floor(shape * f)).astype(int)
    g = np.minimum(g, np.asarray(volume_shape))
    while g.prod() > nodes and g.max() > 2:
        g[np.argmax(g / shape)] -= 1
    if g.prod() > nodes:
        return None
    return tuple(int(x) for x in g)
