"""Size budgets: bytes allowed, Gaussians that fit, and the final prune.

File sizes come from ``container.file_size`` (the exact bytes ``save``
writes). Format version 2 stores a Gaussian in a data-dependent number of
bits (about 12 bytes; docs/format.md), so training aims for the count
``gaussians_for_bytes`` estimates from the volume's shape, and the final prune
(``fit_budget``) bisects on the count until the exact size fits.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from ..gaussians import GaussianVolume

#: version-1 bytes per Gaussian (the fallback estimate when the container is missing)
BYTES_PER_GAUSSIAN = 22
#: conservative per-file overhead of the estimate (header, tables, checksums)
ESTIMATE_OVERHEAD = 256
#: typical bit widths of the version-2 planes other than positions, measured on models trained
#: at 0.073-0.3 bpp (Purkinje, nuclei): scales 3 x 8, quaternion index 2 + 3 x 9, amplitude 10
V2_OTHER_BITS = 3 * 8 + 2 + 3 * 9 + 10


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


def bytes_per_gaussian(shape) -> float:
    """Expected stored bytes per Gaussian in a one-brick version-2 file of a volume of ``shape``
    (voxels, ZYX): position bits for a box spanning the volume, typical widths for the rest."""
    try:
        from ..container.payload_v2 import position_levels
    except ImportError:
        return float(BYTES_PER_GAUSSIAN)
    levels = position_levels(np.zeros(3, np.float32), np.asarray(shape, np.float32) - 1)
    pos_bits = sum(int(v).bit_length() for v in levels)
    return (pos_bits + V2_OTHER_BITS) / 8


def gaussians_for_bytes(template: GaussianVolume, budget: int) -> int:
    """About the largest N such that a model like ``template`` with N Gaussians fits in
    ``budget`` bytes (an estimate from ``bytes_per_gaussian``; ``fit_budget`` makes it exact)."""
    empty = template.subset(np.zeros(0, np.int64))
    base = file_size(empty)
    if budget < base:
        raise InputError(
            f"size budget of {budget} bytes is smaller than an empty model file ({base} bytes, "
            "header and background field); ask for a larger --bpp/--ratio"
        )
    descriptors = 33  # a version-2 brick's plane descriptors
    n = math.floor((budget - base - descriptors) / bytes_per_gaussian(template.shape))
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


def fit_budget(gv: GaussianVolume, budget: int | None, size=None) -> GaussianVolume:
    """The most massive Gaussians of ``gv`` (order preserved) that fit: the largest count N
    with ``size(model) <= budget`` (no-op for None). ``size``: bytes of a model, by default
    ``file_size`` (a whole file); e.g. ``container.codec.brick_payload_size`` for one brick.

    Keeping the N most massive Gaussians gives nested subsets, whose stored size never
    decreases with N (a subset's code ranges and position box lie within the superset's),
    so bisection on N finds the exact largest N in about log2(n) size evaluations.
    """
    size = file_size if size is None else size
    if budget is None or size(gv) <= budget:
        return gv
    order = np.argsort(-importance(gv), kind="stable")

    def top(n):
        return gv.subset(np.sort(order[:n]))

    lo, hi = 0, gv.n_gaussians  # file_size(top(lo)) <= budget or lo == 0; top(hi) does not fit
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if size(top(mid)) <= budget:
            lo = mid
        else:
            hi = mid
    return top(lo)


def field_shape(nodes: int, volume_shape) -> tuple[int, int, int] | None:
    """A grid of at most ``nodes`` nodes with spacing roughly equal in voxels (None if < 8 nodes)."""
    if nodes < 8:
        return None
    shape = np.asarray(volume_shape, np.float64)
    f = (nodes / shape.prod()) ** (1 / 3)
    g = np.maximum(2, np.floor(shape * f)).astype(int)
    g = np.minimum(g, np.asarray(volume_shape))
    while g.prod() > nodes and g.max() > 2:
        # never below one node: a shallow volume's short axis would otherwise reach 0 (issue 15, item 14)
        g[np.argmax(np.where(g > 1, g / shape, -np.inf))] -= 1
    if g.prod() > nodes:
        return None
    return tuple(int(x) for x in g)
