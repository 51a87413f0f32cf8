"""Evaluator ``"knn-centres"``: the paper's decoder, each point sums only its K nearest Gaussians.

Kept for comparison with the paper. On trained models it loses several dB
against the exact decode at the paper's K = 32 (Gaussians pile up along
neurites and somata, and one that reaches a voxel strongly can have its centre
farther than K others): the default ``"knn"`` evaluator (``knn.py``) ranks
Gaussians by their contribution instead. ``decode_measured`` reports the loss.

Definition. At a point v, Gaussian g contributes ``w_g exp(-d_g^2 / 2)`` when
its Mahalanobis distance satisfies ``d_g^2 <= 9`` AND its centre is among the
K centres nearest to v (Euclidean distance in voxel units, computed in
float64; **ties are broken by the lower Gaussian index**, so results are
deterministic). With K >= N every Gaussian is a neighbour and the result is
the exact sum (the dense evaluator's).

Neighbour search uses faiss (``IndexFlatL2`` on float32 centres, moved to the
GPU when faiss has one). faiss distances are float32; they are only used as
bounds (widened by a bound on their rounding error), and every decision that
is not settled by those bounds is taken on exact float64 distances, so the
result does not depend on faiss's rounding or tie order.

- Searches are local when they are large: queries are grouped into cubes and
  each group is searched against only the centres within a margin of it (the
  margin grows for any query whose answer could reach past it). Up to
  ``_ONE_SEARCH_PAIRS`` query-centre pairs they are one faiss call against
  every centre. Small searches run faiss on one thread (its OpenMP overhead
  dominates them).
- Points: a faiss search gives each point's K-th neighbour distance bounds
  ``rlo <= r_K <= rup``. A covering Gaussian (d^2 <= 9, found through a coarse
  cell grid of 3-sigma boxes) closer than ``rlo`` is a neighbour, one farther
  than ``rup`` is not; in between (rare) its exact rank is counted among the
  point's candidates (a faiss range search of radius ``rup``).
- Regions: the grid is cut into tiles of 8^3 output voxels (16 x 16 for a
  plane, so a tile still holds a few hundred voxels). One faiss search
  for the tile centres gives ``rlo``/``rup`` per tile; a voxel at distance
  ``rv`` from its tile centre has its K-th neighbour within
  ``[rlo - rv, rup + rv]``, so a Gaussian closer than ``rlo - rv`` is certainly
  a neighbour and one farther than ``rup + rv`` certainly not. Gaussians
  settled for the whole tile are splatted like the dense decoder; the rest are
  tested voxel by voxel, counting exact ranks among the tile's candidates
  (every centre within ``rup + 2 h`` of the tile centre, h = tile
  half-diagonal, gathered by a faiss range search only for the tiles that
  need it, sorted by distance to the tile centre so a count compares only
  those that could be on either side). No search is ever done per voxel
  against all Gaussians.

There is no approximation beyond float64 rounding of distances: the result
is the K-nearest sum as defined above.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from . import _centres_kernels as KC
from . import _kernels as K
from .base import DecodeLoss, Evaluator, add_background_points, block_peak
from .dense import _KERNEL_DTYPES, PointLookup, background_weights, decode_into, prepared, select_in_box

#: Tile edge (output voxels) of the region decoder.
TILE = 8
#: Tile edge when the region is one voxel thick along some axis (a slice): 8 x 8 x 1
#: tiles hold too few voxels to pay for their neighbour search (measured on the
#: sample's 256 x 256 slices: median 58 ms with 8, 40 ms with 16, 41 ms with 20).
PLANE_TILE = 16


def tile_edge(shape) -> int:
    """Tile edge (output voxels) for a region of ``shape`` output voxels."""
    return PLANE_TILE if min(shape) == 1 else TILE


#: Relative bound on faiss's float32 squared-distance error (of |q|^2 + |c|^2).
_FAISS_REL_ERR = 2e-6

#: Below this many query-centre pairs a faiss search runs on one thread: its
#: OpenMP start-up and barriers cost more than they save on small batches
#: (measured: 2x the CPU time, and worse on a loaded machine).
_FAISS_PARALLEL_PAIRS = 50_000_000

#: Up to this many query-centre pairs (about 20 ms of faiss on one core), all
#: queries are answered by one faiss call against every centre instead of by cube
#: groups against local subsets. Fewer, larger calls: each call releases the GIL,
#: and in a GUI every re-acquisition can wait out the main thread's switch
#: interval (measured in napari: the grouped neighbour bounds of one 256 x 256
#: slice of the 2,364-Gaussian sample took 85-105 ms there, 22 ms in a script).
_ONE_SEARCH_PAIRS = 2_500_000

_gpu_resources = None


@contextmanager
def _faiss_threads(n):
    """Run faiss with ``n`` OpenMP threads inside the block (None: leave as is)."""
    import faiss

    if n is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def make_index(points32: np.ndarray, gpu: bool = True):
    """A faiss ``IndexFlatL2`` holding ``points32`` (N, 3), on the GPU if faiss has one and ``gpu``.

    Range searches use CPU indexes (faiss's GPU flat index has no range search).
    """
    import faiss

    global _gpu_resources
    index = faiss.IndexFlatL2(3)
    index.add(points32)
    if gpu and faiss.get_num_gpus() > 0 and hasattr(faiss, "StandardGpuResources"):
        if _gpu_resources is None:
            _gpu_resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(_gpu_resources, 0, index)
    return index


class Neighbours:
    """Nearest-centre queries on a prepared Gaussian table.

    Each batch of queries is answered from a faiss index over only the
    centres inside the queries' bounding box plus a margin; a query's answer
    is accepted when everything it needs lies closer than the box's faces
    (so no centre outside the box could change it), otherwise the margin is
    doubled for the queries that failed. Coordinates are shifted to the
    centres' midpoint so float32 keeps its precision.
    """

    def __init__(self, g: np.ndarray):
        self.g = g
        self.n = len(g)
        c = g[:, K.CZ : K.CX + 1]
        self.centres = c
        self.shift = 0.5 * (c.min(axis=0) + c.max(axis=0))
        self.c32 = np.ascontiguousarray(c - self.shift, np.float32)
        self.cmax2 = float((self.c32.astype(np.float64) ** 2).sum(axis=1).max())
        span = np.maximum(c.max(axis=0) - c.min(axis=0), 1.0)
        self.density = self.n / float(np.prod(span))  # centres per voxel^3

    def _margin(self, k: int) -> float:
        """Initial margin: about the radius holding 2 k centres at the mean density."""
        return float((3.0 * 2 * k / (4.0 * np.pi * self.density)) ** (1.0 / 3.0)) + 1.0

    def _groups(self, queries: np.ndarray, side: float) -> list[np.ndarray]:
        """Query indices in cubes of edge ``side``, or all in one group if that search is small."""
        if len(queries) * self.n <= _ONE_SEARCH_PAIRS:
            return [np.arange(len(queries))]
        return _cube_groups(queries, side)

    def _local(self, queries: np.ndarray, margin: float, gpu: bool = True):
        """(global indices of the centres in the box, faiss index on them, per-query distance to the box faces)."""
        lo = queries.min(axis=0) - margin
        hi = queries.max(axis=0) + margin
        inside = np.all((self.centres >= lo) & (self.centres <= hi), axis=1)
        sub = np.flatnonzero(inside)
        if len(sub) == self.n:
            ext = np.full(len(queries), np.inf)
        else:
            ext = np.minimum(queries - lo, hi - queries).min(axis=1)
        return sub, make_index(self.c32[sub], gpu=gpu) if len(sub) else None, ext

    def _query32(self, queries: np.ndarray):
        """Queries as faiss sees them (shifted, float32) and a bound on faiss's squared-distance error for each."""
        q32 = np.ascontiguousarray(queries - self.shift, np.float32)
        eps = _FAISS_REL_ERR * ((q32.astype(np.float64) ** 2).sum(axis=1) + self.cmax2) + 1e-9
        return q32, eps

    def _search(self, index, sub, queries: np.ndarray, k: int):
        q32, eps = self._query32(queries)
        with _faiss_threads(1 if len(q32) * len(sub) < _FAISS_PARALLEL_PAIRS else None):
            d, i = index.search(q32, k)
        return d.astype(np.float64), sub[i.astype(np.int64)], eps

    def bounds(self, queries: np.ndarray, k: int):
        """Lower and upper bounds (float64, voxels) of each query's K-th nearest centre distance (k < N).

        Large searches: queries are grouped into cubes about two margins wide,
        each searched against the centres near it only (search cost grows with
        the centres in the local index); small ones search every centre at once.
        """
        rlo = np.empty(len(queries))
        rup = np.empty(len(queries))
        margin = self._margin(k)
        groups = self._groups(queries, 2.0 * margin)
        if len(groups) == 1:
            margin = np.inf  # every centre: no query can reach past the box
        for todo in groups:
            self._bounds_group(queries, todo, k, margin, rlo, rup)
        return rlo, rup

    def _bounds_group(self, queries, todo, k, margin, rlo, rup):
        while len(todo):
            q = queries[todo]
            sub, index, ext = self._local(q, margin)
            margin *= 2.0
            if len(sub) < k:
                continue
            d, i, eps = self._search(index, sub, q, k)
            ru = KC.knn_upper_radius(self.g, q, i)
            ok = ru * (1.0 + 1e-9) + 1e-9 < ext
            rlo[todo[ok]] = np.sqrt(np.maximum(d[ok, k - 1] - eps[ok], 0.0))
            rup[todo[ok]] = ru[ok]
            todo = todo[~ok]

    def candidates(self, queries: np.ndarray, which: np.ndarray, radius: np.ndarray, k: int):
        """For ``queries[which]``: every centre within ``radius`` (float64, voxels) of it, and possibly more.

        Returns ``(cstart, cend, cidx, cdist)`` over all queries: query ``q``'s
        candidates are ``cidx[cstart[q]:cend[q]]``, sorted by ``cdist``, their
        float64 distance to it; queries not in ``which`` get ``cstart = -1``.
        The queries are grouped into cubes; each group is answered by one faiss
        range search (radius: the group's largest, widened by the float32 error
        bound) on the centres near it, then each query keeps the centres within
        its own radius (widened the same way).
        """
        cstart = np.full(len(queries), -1, np.int64)
        cend = np.zeros(len(queries), np.int64)
        which = np.asarray(which, np.int64)
        rad = np.asarray(radius, np.float64)
        if len(which) == 0:
            return cstart, cend, np.zeros(0, np.int64), np.zeros(0, np.float64)
        chunks, counts, order = [], [], []
        for sel in self._groups(queries[which], 2.0 * max(self._margin(k), float(np.median(rad)))):
            t, r = which[sel], rad[sel]
            q = queries[t]
            sub, index, _ = self._local(q, float(r.max()) * (1.0 + 1e-9) + 1e-6, gpu=False)
            order.append(t)
            if len(sub) == 0:
                counts.append(np.zeros(len(t), np.int64))
                continue
            q32, eps = self._query32(q)
            keep2 = r**2 + eps
            with _faiss_threads(1 if len(q32) * len(sub) < _FAISS_PARALLEL_PAIRS else None):
                lims, d, i = index.range_search(q32, float(keep2.max()) * (1.0 + 1e-6))
            cnt, ci, dist = KC.keep_within(lims, d, i, keep2, sub, self.centres, q)
            counts.append(cnt)
            chunks.append((ci, dist))
        order = np.concatenate(order)
        counts = np.concatenate(counts)
        ends = np.cumsum(counts)
        cstart[order] = ends - counts
        cend[order] = ends
        if not chunks:
            return cstart, cend, np.zeros(0, np.int64), np.zeros(0, np.float64)
        if len(chunks) == 1:
            return cstart, cend, chunks[0][0], chunks[0][1]
        # pairs already grouped as ``order``, nearest first within each query's candidates
        return cstart, cend, np.concatenate([a for a, _ in chunks]), np.concatenate([b for _, b in chunks])


def _cube_groups(points: np.ndarray, side: float) -> list[np.ndarray]:
    """Indices of ``points`` (M, 3) grouped by the cube of edge ``side`` they fall in."""
    keys = np.floor((points - points.min(axis=0)) / side).astype(np.int64)
    _, group = np.unique(keys, axis=0, return_inverse=True)
    group = group.ravel()
    order = np.argsort(group, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(group[order])) + 1)


def _no_candidates(m: int):
    return np.full(m, -1, np.int64), np.zeros(m, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)


def knn_sum_points(g: np.ndarray, points: np.ndarray, k: int) -> np.ndarray:
    """K-nearest 3-sigma sum (float64, model units, no background) at (M, 3) points."""
    n, m = len(g), len(points)
    lookup = PointLookup(g)
    if n == 0 or k >= n or m == 0:
        return lookup.sum(points)
    nb = Neighbours(g)
    rlo, rup = nb.bounds(points, k)
    out = np.zeros(m, np.float64)
    undecided = np.zeros(m, np.bool_)
    args = (g, points)
    grid = (lookup.origin, lookup.cell, lookup.ncell, lookup.ptr, lookup.idx, rlo, rup)
    KC.knn_points(*args, np.arange(m, dtype=np.int64), *grid, *_no_candidates(m), k, out, undecided)
    if undecided.any():
        which = np.flatnonzero(undecided)
        cand = nb.candidates(points, which, rup[which], k)
        undecided[:] = False
        KC.knn_points(*args, which, *grid, *cand, k, out, undecided)
        assert not undecided.any()
    return out


def knn_decode_into(gv, grid, out, k, offset=0.0, scale=1.0, is_int=False, lo=-np.inf, hi=np.inf) -> np.ndarray:
    """Fill ``out`` (``grid.shape``) with ``offset + scale * (K-nearest sum + background)``."""
    g = prepared(gv)
    if len(g) == 0 or k >= len(g):  # every Gaussian is a neighbour: the exact sum
        decode_into(gv, grid, out, offset, scale, is_int, lo, hi)
        return out
    start = np.asarray(grid.start, np.int64)
    step = np.asarray(grid.step, np.int64)
    startf = start.astype(np.float64)
    sel = select_in_box(gv, startf, grid.last)
    shape = np.asarray(out.shape, np.int64)
    tile = tile_edge(out.shape)
    ntile = (shape + tile - 1) // tile
    ptr, idx = K.bin_boxes(g, sel, startf, (tile * step).astype(np.float64), ntile)
    # Tile centres and half-diagonals, C order over the tile grid.
    centres, halves = [], []
    for a in range(3):
        t0 = np.arange(ntile[a]) * tile
        t1 = np.minimum(t0 + tile, shape[a]) - 1
        centres.append(start[a] + step[a] * 0.5 * (t0 + t1))
        halves.append(step[a] * 0.5 * (t1 - t0))
    tc = np.stack(np.meshgrid(*centres, indexing="ij"), -1).reshape(-1, 3)
    th = np.sqrt(sum(h**2 for h in np.meshgrid(*halves, indexing="ij"))).ravel()
    nb = Neighbours(g)
    rlo, rup = nb.bounds(tc, k)
    undecided = np.zeros(len(tc), np.bool_)
    bg = background_weights(gv, grid)
    conv = (float(offset), float(scale), bool(is_int), float(lo), float(hi), out, undecided)
    head = (g,)
    mid = (tile, start, step, ptr, idx, rlo, rup)
    KC.knn_tiles(*head, np.arange(len(tc), dtype=np.int64), *mid, *_no_candidates(len(tc)), k, *bg, *conv)
    if undecided.any():
        which = np.flatnonzero(undecided)
        cand = nb.candidates(tc, which, rup[which] + 2 * th[which], k)
        undecided[:] = False
        KC.knn_tiles(*head, which, *mid, *cand, k, *bg, *conv)
        assert not undecided.any()
    return out


class KnnCentresEvaluator(Evaluator):
    name = "knn-centres"

    def evaluate_model(self, gv, points, k):
        points = np.ascontiguousarray(points, np.float64)
        vals = knn_sum_points(prepared(gv), points, k)
        return add_background_points(gv, points, vals).astype(np.float32)

    def decode_model(self, gv, grid, k):
        return knn_decode_into(gv, grid, np.empty(grid.shape, np.float32), k)

    def decode(self, gv, grid, k):
        m = gv.mapping
        if m.dtype not in _KERNEL_DTYPES:
            return m.to_original(self.decode_model(gv, grid, k))
        lo, hi = m.clip_range
        out = np.empty(grid.shape, m.dtype)
        return knn_decode_into(gv, grid, out, k, m.offset, m.scale, m.is_integer, lo, hi)

    def decode_measured(self, gv, grid, k):
        """``decode`` and its difference from the exact (dense) decode, which is computed too."""
        approx = self.decode_model(gv, grid, k)
        exact = np.empty(grid.shape, np.float32)
        decode_into(gv, grid, exact)
        diff = np.abs(approx.astype(np.float64) - exact)
        tol = 1e-6 * float(np.abs(exact).max(initial=0.0))  # float32 rounding of equal sums
        block = gv.mapping.to_original(approx)
        s = abs(float(gv.mapping.scale))
        loss = DecodeLoss(
            voxels=block.size, changed=int(np.count_nonzero(diff > tol)), sum_sq=float(np.sum(diff**2)) * s * s,
            max_abs=float(diff.max(initial=0.0)) * s, peak=block_peak(block),
        )
        return block, loss
