"""Dense evaluator: each Gaussian's exact 3-sigma footprint gathered onto the grid.

Exact up to the model's own cutoff (every Gaussian with Mahalanobis distance
d <= 3 counts; ``d^2 <= 9`` inclusive) and fast: the numba kernel runs in
parallel over Z planes (each thread owns whole output planes, so there are no
write conflicts), cuts each Gaussian's ellipsoid by the plane, solves each row
for the exact x-span and walks it with a multiplicative exp recurrence.
Sums are float64; the background field and the conversion to the output
dtype (``offset + scale * value``, rounded half-even and clipped for integer
dtypes, as ``IntensityMapping.to_original``) happen in the same pass.

Only Gaussians whose 3-sigma box meets the requested region are touched, so a
small region of a big model costs little. Strided regions (``step > 1``)
sample the exact sum at the strided voxel centres (no averaging).

``evaluate_model`` (arbitrary points) bins the Gaussians' boxes into a coarse
cell grid and tests each point against its cell's list: exact, not O(M N).
"""

from __future__ import annotations

import weakref

import numba
import numpy as np

from .. import background as bgfield
from . import _kernels as K
from .base import Evaluator, add_background_points

#: Output dtypes converted inside the kernel (one compiled specialisation each).
_KERNEL_DTYPES = {np.dtype(t) for t in (np.float32, np.float64, np.uint8, np.uint16, np.uint32, np.int8, np.int16, np.int32)}

#: Cap on the number of cells of the point-lookup grid.
_MAX_CELLS = 4_000_000


#: Per live model, by ``id`` (entries leave when the model is collected): its prepared table, its
#: boxes and, once points were asked for, its ``PointLookup``.
_prepared: dict[int, list] = {}


def _entry(gv) -> list:
    key = id(gv)
    hit = _prepared.get(key)
    if hit is not None and hit[0]() is gv:
        return hit
    g = K.prepare(gv.centers, gv.scales, gv.quaternions, gv.amplitudes)
    entry = [weakref.ref(gv, lambda _ref, key=key: _prepared.pop(key, None)), g, K.boxes(g), None]
    _prepared[key] = entry
    return entry


def _tables(gv) -> tuple[np.ndarray, np.ndarray]:
    entry = _entry(gv)
    return entry[1], entry[2]


def point_lookup(gv) -> PointLookup:
    """``gv``'s Gaussians binned for point queries (built on first use, then cached with the model)."""
    entry = _entry(gv)
    if entry[3] is None:
        entry[3] = PointLookup(entry[1])
    return entry[3]


def prepared(gv) -> np.ndarray:
    """The (N, NPARAM) float64 table of ``gv``'s Gaussians (see ``_kernels.prepare``).

    Cached per model (its arrays are read-only), so decoding many small
    regions of one model does not redo the per-Gaussian set-up. The table is
    shared: callers must not modify it (it stays writeable only because numba
    compiles read-only arrays as a separate type).
    """
    return _tables(gv)[0]


def select_in_box(gv, lo, hi) -> np.ndarray:
    """Indices (int64) of ``gv``'s Gaussians whose 3-sigma box meets ``[lo, hi]`` (voxel coordinates, ZYX)."""
    return K.select_in_box(_tables(gv)[1], np.asarray(lo, np.float64), np.asarray(hi, np.float64))


def background_weights(gv, grid):
    """Background field (float64, or an empty (0, 0, 0) array) and its per-axis nodes/weights on ``grid``."""
    coords = grid.axis_coords()
    if gv.background is None:
        z = np.zeros(0, np.int64)
        w = np.zeros(0, np.float64)
        return np.zeros((0, 0, 0), np.float64), z, w, z, w, z, w
    field = np.ascontiguousarray(gv.background, dtype=np.float64)
    out = [field]
    for a in range(3):
        i0, w1 = bgfield.axis_weights(field.shape[a], gv.shape[a], coords[a])
        out += [np.ascontiguousarray(i0, np.int64), np.ascontiguousarray(w1, np.float64)]
    return tuple(out)


def decode_into(gv, grid, out, offset=0.0, scale=1.0, is_int=False, lo=-np.inf, hi=np.inf, k=0) -> np.ndarray:
    """Fill ``out`` (``grid.shape``, a kernel dtype) with ``offset + scale * model`` on ``grid``.

    ``k <= 0``: the exact sum; ``k > 0``: the K-strongest rule of ``knn.py``.
    Returns ``splat_decode``'s statistics of the voxels the rule changed (5,).
    Runs on the GPU where ``gpu.decode_on_gpu`` says so (``_cuda_dense.py``, same results).
    """
    from ..gpu import decode_on_gpu

    if decode_on_gpu(out.size):
        from ._cuda_dense import decode_into as decode_on_device

        return decode_on_device(gv, grid, out, offset, scale, is_int, lo, hi, k)
    g = prepared(gv)
    start = np.asarray(grid.start, np.int64)
    step = np.asarray(grid.step, np.int64)
    last = np.asarray(grid.last, np.float64)
    sel = select_in_box(gv, start, last)
    # Visit Gaussians in y order within each plane (better cache use of the plane buffer).
    sel = sel[np.argsort(g[sel, K.CY], kind="stable")]
    ptr, idx = K.plane_lists(g, sel, float(start[0]), float(step[0]), out.shape[0])
    return K.splat_decode(
        g, ptr, idx, start, step, int(k), *background_weights(gv, grid),
        float(offset), float(scale), bool(is_int), float(lo), float(hi), out, numba.get_num_threads(),
    )


class PointLookup:
    """Gaussians binned by their 3-sigma boxes into a coarse grid of cells (for point queries)."""

    def __init__(self, g: np.ndarray):
        self.g = g
        n = len(g)
        if n == 0:
            self.origin = np.zeros(3)
            self.cell = np.ones(3)
            self.ncell = np.ones(3, np.int64)
            self.ptr = np.zeros(2, np.int64)
            self.idx = np.zeros(0, np.int64)
            return
        c = g[:, K.CZ : K.CX + 1]
        e = g[:, K.EZ : K.EX + 1]
        lo = (c - e).min(axis=0) - 1e-6
        hi = (c + e).max(axis=0) + 1e-6
        # Cells about as wide as a typical box: each Gaussian lands in ~8 cells.
        size = max(float(np.median(2 * e)), 1.0)
        span = hi - lo
        while np.prod(np.ceil(span / size)) > _MAX_CELLS:
            size *= 1.5
        self.origin = lo
        self.cell = np.full(3, size)
        self.ncell = np.maximum(np.ceil(span / size).astype(np.int64), 1)
        self.ptr, self.idx = K.bin_boxes(g, np.arange(n, dtype=np.int64), self.origin, self.cell, self.ncell)

    def sum(self, points: np.ndarray, k: int = 0) -> np.ndarray:
        """Gaussian sum (float64, model units, no background) at (M, 3) points: exact
        (``k <= 0``) or by the K-strongest rule of ``knn.py``."""
        if len(self.g) == 0:
            return np.zeros(len(points), np.float64)
        return K.points_sum(self.g, points, self.origin, self.cell, self.ncell, self.ptr, self.idx, int(k))


class DenseEvaluator(Evaluator):
    name = "dense"

    def evaluate_model(self, gv, points, k):
        points = np.ascontiguousarray(points, np.float64)
        vals = point_lookup(gv).sum(points)
        return add_background_points(gv, points, vals).astype(np.float32)

    def decode_model(self, gv, grid, k):
        out = np.empty(grid.shape, np.float32)
        decode_into(gv, grid, out)
        return out

    def decode(self, gv, grid, k):
        m = gv.mapping
        if m.dtype not in _KERNEL_DTYPES:  # e.g. float16: numba has no such arrays
            return m.to_original(self.decode_model(gv, grid, k))
        lo, hi = m.clip_range
        out = np.empty(grid.shape, m.dtype)
        decode_into(gv, grid, out, m.offset, m.scale, m.is_integer, lo, hi)
        return out
