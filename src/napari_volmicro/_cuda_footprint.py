"""GPU (numba-cuda) kernels of the exact 3-sigma footprint on a strided lattice.

The same model as the CPU kernels (``encode/_kernels.py``), from the same
math (``_footprint.py``, compiled here with ``cuda.jit(device=True)``): every
Gaussian whose ellipsoid ``d^2 <= 9`` covers a lattice voxel contributes
``w exp(-d^2/2)`` there. Under numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``) these kernels run line for line on the CPU; the
tests compare them with the CPU kernels and the brute-force reference.

Work items are the lattice rows (fixed z, y) of each Gaussian's 3-sigma box,
Gaussian by Gaussian in index order, rows in (z, y) order: ``ends[i]`` (int64,
(N,)) is the inclusive prefix sum of ``count_rows``; one GPU thread takes one
item, finds its Gaussian by binary search, solves the row's exact x-span and
walks it with the exp recurrence.

- Forward (``splat_rows``): each sample adds ``round(scale * w g)`` to an int64
  accumulator with an atomic add. Integer addition is associative, so the sum
  is the same whatever order the threads run in (deterministic), and the
  fixed-point scale (``_footprint.fixed_point_scale``) keeps float64-like
  accuracy without overflow. The lattice is done in Z slabs ``[za, zb)`` of
  bounded size, so the int64 temporaries stay small on any volume.
- Backward (``grad_rows`` then ``grad_reduce``): each row's three sums along x
  (sum r g, sum r g dx, sum r g dx^2) go to a per-item buffer; one thread per
  Gaussian then adds its rows' ``row_moments`` in row order, exactly as the CPU
  kernel does (no atomics, deterministic). Items are done in chunks of bounded
  size.

Gaussians are rows of a float64 table ``tab`` (N, NCOL): centre, precision
entries (Pzz, Pyy, Pxx, Pzy, Pzx, Pyx), amplitude, 3-sigma box half-widths.
Lattice geometry is passed as scalars (``off_*`` and ``st_*`` float, ``n_*`` int).
"""

from __future__ import annotations

import math

from numba import cuda
from numba.core import config

from . import _footprint as F

CZ, CY, CX = 0, 1, 2
PZZ, PYY, PXX, PZY, PZX, PYX = 3, 4, 5, 6, 7, 8
AMP = 9
HZ, HY, HX = 10, 11, 12
NCOL = 13

#: threads per block (the simulator runs a Python thread per CUDA thread: small blocks there)
THREADS = 32 if config.ENABLE_CUDASIM else 256

_device = cuda.jit(device=True)
axis_range = _device(F.axis_range)
row_coeffs = _device(F.row_coeffs)
row_span = _device(F.row_span)
row_d2 = _device(F.row_d2)
row_start = _device(F.row_start)
row_moments = _device(F.row_moments)
background_at = _device(F.background_at)
to_output = _device(F.to_output)
top_k_in_id_order = _device(F.top_k_in_id_order)
CUTOFF_D2 = F.CUTOFF_D2


@cuda.jit(device=True)
def _owner(ends, t):
    """The Gaussian whose items hold item ``t``: the first ``i`` with ``ends[i] > t``."""
    lo = 0
    hi = ends.shape[0] - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if ends[mid] > t:
            hi = mid
        else:
            lo = mid + 1
    return lo


@cuda.jit(device=True)
def _box(tab, i, off_z, off_y, st_z, st_y, n_z, n_y, za, zb):
    """Lattice planes ``z0..z1`` (within ``[za, zb)``) and rows ``y0..y1`` of Gaussian ``i``'s box."""
    z0, z1 = axis_range(tab[i, CZ], tab[i, HZ], off_z, st_z, n_z)
    if z0 < za:
        z0 = za
    if z1 > zb - 1:
        z1 = zb - 1
    y0, y1 = axis_range(tab[i, CY], tab[i, HY], off_y, st_y, n_y)
    return z0, z1, y0, y1


@cuda.jit(cache=True)
def count_rows(tab, off_z, off_y, st_z, st_y, n_z, n_y, za, zb, skip_zero, counts):
    """``counts[i]``: lattice rows of Gaussian ``i``'s box in planes ``[za, zb)`` (0 if ``skip_zero`` and w = 0)."""
    i = cuda.grid(1)
    if i >= tab.shape[0]:
        return
    z0, z1, y0, y1 = _box(tab, i, off_z, off_y, st_z, st_y, n_z, n_y, za, zb)
    n = 0
    if z0 <= z1 and y0 <= y1 and not (skip_zero and tab[i, AMP] == 0.0):
        n = (z1 - z0 + 1) * (y1 - y0 + 1)
    counts[i] = n


@cuda.jit(device=True)
def _item_row(ends, tab, t, off_z, off_y, st_z, st_y, n_z, n_y, za, zb):
    """(Gaussian, lattice plane, lattice row) of item ``t``."""
    i = _owner(ends, t)
    start = ends[i - 1] if i > 0 else 0
    z0, z1, y0, y1 = _box(tab, i, off_z, off_y, st_z, st_y, n_z, n_y, za, zb)
    ny_i = y1 - y0 + 1
    local = t - start
    return i, z0 + local // ny_i, y0 + local % ny_i


@cuda.jit(cache=True)
def splat_rows(ends, tab, item0, item1, off_z, off_y, off_x, st_z, st_y, st_x, n_z, n_y, n_x, za, zb, scale, acc,
               counting, cnt):
    """Add items ``[item0, item1)`` to ``acc`` (int64, planes ``[za, zb)`` flattened C order), fixed point;
    with ``counting``, also count the Gaussians reaching each voxel in ``cnt`` (int32, like ``acc``)."""
    t = item0 + cuda.grid(1)
    if t >= item1:
        return
    i, iz, iy = _item_row(ends, tab, t, off_z, off_y, st_z, st_y, n_z, n_y, za, zb)
    cx = tab[i, CX]
    pxx = tab[i, PXX]
    dz = off_z + st_z * iz - tab[i, CZ]
    dy = off_y + st_y * iy - tab[i, CY]
    b, c = row_coeffs(tab[i, PZZ], tab[i, PYY], tab[i, PZY], tab[i, PZX], tab[i, PYX], dz, dy)
    ix0, ix1 = row_span(b, c, pxx, cx, off_x, st_x, n_x)
    if ix0 > ix1:
        return
    cst = c + CUTOFF_D2
    g, ratio = row_start(cst, b, pxx, off_x + st_x * ix0 - cx, st_x)
    q = math.exp(-pxx * st_x * st_x)
    ws = tab[i, AMP] * scale
    base = ((iz - za) * n_y + iy) * n_x
    for ix in range(ix0, ix1 + 1):
        if row_d2(cst, b, pxx, off_x + st_x * ix - cx) <= CUTOFF_D2:
            cuda.atomic.add(acc, base + ix, int(math.floor(ws * g + 0.5)))
            if counting:
                cuda.atomic.add(cnt, base + ix, 1)
        g *= ratio
        ratio *= q


@cuda.jit(cache=True)
def grad_rows(ends, tab, item0, item1, off_z, off_y, off_x, st_z, st_y, st_x, n_z, n_y, n_x, r, part):
    """``part[t - item0]`` = (sum r g, sum r g dx, sum r g dx^2) of item ``t``'s row (``r``: flat lattice)."""
    t = item0 + cuda.grid(1)
    if t >= item1:
        return
    i, iz, iy = _item_row(ends, tab, t, off_z, off_y, st_z, st_y, n_z, n_y, 0, n_z)
    cx = tab[i, CX]
    pxx = tab[i, PXX]
    dz = off_z + st_z * iz - tab[i, CZ]
    dy = off_y + st_y * iy - tab[i, CY]
    b, c = row_coeffs(tab[i, PZZ], tab[i, PYY], tab[i, PZY], tab[i, PZX], tab[i, PYX], dz, dy)
    ix0, ix1 = row_span(b, c, pxx, cx, off_x, st_x, n_x)
    r0 = 0.0
    r1 = 0.0
    r2 = 0.0
    if ix0 <= ix1:
        cst = c + CUTOFF_D2
        g, ratio = row_start(cst, b, pxx, off_x + st_x * ix0 - cx, st_x)
        q = math.exp(-pxx * st_x * st_x)
        base = (iz * n_y + iy) * n_x
        for ix in range(ix0, ix1 + 1):
            dx = off_x + st_x * ix - cx
            if row_d2(cst, b, pxx, dx) <= CUTOFF_D2:
                rg = float(r[base + ix]) * g  # float64, also under the simulator (numpy keeps float32 * float as float32)
                r0 += rg
                r1 += rg * dx
                r2 += rg * dx * dx
            g *= ratio
            ratio *= q
    j = t - item0
    part[j, 0] = r0
    part[j, 1] = r1
    part[j, 2] = r2


@cuda.jit(cache=True)
def grad_reduce(ends, tab, item0, item1, off_z, off_y, st_z, st_y, n_z, n_y, part, acc):
    """``acc[i]`` += the ten sums of Gaussian ``i``'s rows among items ``[item0, item1)``, in row order."""
    i = cuda.grid(1)
    if i >= tab.shape[0]:
        return
    start = ends[i - 1] if i > 0 else 0
    a = max(start, item0)
    b = min(ends[i], item1)
    if a >= b:
        return
    z0, z1, y0, y1 = _box(tab, i, off_z, off_y, st_z, st_y, n_z, n_y, 0, n_z)
    ny_i = y1 - y0 + 1
    s0 = acc[i, 0]
    s1 = acc[i, 1]
    s2 = acc[i, 2]
    s3 = acc[i, 3]
    s4 = acc[i, 4]
    s5 = acc[i, 5]
    s6 = acc[i, 6]
    s7 = acc[i, 7]
    s8 = acc[i, 8]
    s9 = acc[i, 9]
    for t in range(a, b):
        local = t - start
        dz = off_z + st_z * (z0 + local // ny_i) - tab[i, CZ]
        dy = off_y + st_y * (y0 + local % ny_i) - tab[i, CY]
        j = t - item0
        m = row_moments(part[j, 0], part[j, 1], part[j, 2], dz, dy)
        s0 += m[0]
        s1 += m[1]
        s2 += m[2]
        s3 += m[3]
        s4 += m[4]
        s5 += m[5]
        s6 += m[6]
        s7 += m[7]
        s8 += m[8]
        s9 += m[9]
    acc[i, 0] = s0
    acc[i, 1] = s1
    acc[i, 2] = s2
    acc[i, 3] = s3
    acc[i, 4] = s4
    acc[i, 5] = s5
    acc[i, 6] = s6
    acc[i, 7] = s7
    acc[i, 8] = s8
    acc[i, 9] = s9


@cuda.jit(cache=True)
def gather_rows(ends, tab, item0, item1, off_z, off_y, off_x, st_z, st_y, st_x, n_z, n_y, n_x, za, zb,
                pos, base, fill, vals, ids):
    """For each voxel of planes ``[za, zb)`` with ``pos[v] >= 0``: store every contribution
    ``w exp(-d^2/2)`` reaching it (and its Gaussian) in its slots ``base[pos[v]] + [0, coverage)``
    (``fill``: next free slot per voxel, int64; slot order is arbitrary)."""
    t = item0 + cuda.grid(1)
    if t >= item1:
        return
    i, iz, iy = _item_row(ends, tab, t, off_z, off_y, st_z, st_y, n_z, n_y, za, zb)
    cx = tab[i, CX]
    pxx = tab[i, PXX]
    dz = off_z + st_z * iz - tab[i, CZ]
    dy = off_y + st_y * iy - tab[i, CY]
    b, c = row_coeffs(tab[i, PZZ], tab[i, PYY], tab[i, PZY], tab[i, PZX], tab[i, PYX], dz, dy)
    ix0, ix1 = row_span(b, c, pxx, cx, off_x, st_x, n_x)
    cst = c + CUTOFF_D2
    w = tab[i, AMP]
    row = ((iz - za) * n_y + iy) * n_x
    for ix in range(ix0, ix1 + 1):
        p = pos[row + ix]
        if p < 0:
            continue
        d2 = row_d2(cst, b, pxx, off_x + st_x * ix - cx)
        if d2 <= CUTOFF_D2:
            slot = base[p] + cuda.atomic.add(fill, p, 1)
            vals[slot] = w * math.exp(-0.5 * d2)
            ids[slot] = i


@cuda.jit(cache=True)
def top_k_voxels(base, fill, vals, ids, keep, k, kept):
    """``kept[p]``: the sum of over-covered voxel ``p``'s ``k`` strongest contributions (slots ``base[p]..fill[p]``)."""
    p = cuda.grid(1)
    if p < kept.shape[0]:
        kept[p] = top_k_in_id_order(vals, ids, keep, base[p], base[p] + fill[p], k)


@cuda.jit(cache=True)
def finish(vals, za, n_y, n_x, has_bg, field, fz0, fzw, fy0, fyw, fx0, fxw, offset, scale, is_int, lo, hi, out):
    """``out[j] = to_output(vals[j] + background)`` for the flat slab of planes from ``za`` (``out``: any dtype)."""
    j = cuda.grid(1)
    if j >= vals.shape[0]:
        return
    v = vals[j]
    if has_bg:
        iz = za + j // (n_y * n_x)
        iy = (j // n_x) % n_y
        ix = j % n_x
        v += background_at(field, fz0[iz], fzw[iz], fy0[iy], fyw[iy], fx0[ix], fxw[ix])
    out[j] = to_output(v, offset, scale, is_int, lo, hi)


@cuda.jit(cache=True)
def probe(out):
    """A trivial kernel: launching it shows that kernels compile and run on this GPU."""
    j = cuda.grid(1)
    if j < out.shape[0]:
        out[j] = j


def blocks(n: int) -> int:
    """Blocks of ``THREADS`` threads covering ``n`` items (at least one)."""
    return max(1, (int(n) + THREADS - 1) // THREADS)


# -- host side: launches over torch tensors ---------------------------------------------
#
# Device memory is torch's (its caching allocator); kernels see it through
# ``__cuda_array_interface__`` without a copy. Both libraries launch on the legacy
# default stream, so their work is ordered without extra synchronisation. Under
# the simulator the tensors live on the CPU and kernels get numpy views of them.

#: voxels of one Z slab of the forward pass (its int64 accumulator: 8 bytes each)
SLAB_VOXELS = 1 << 24
#: row items per backward chunk (its per-item buffer: 24 bytes each)
CHUNK_ITEMS = 1 << 22
#: row items per forward launch (keeps thread indices far from 2^31)
LAUNCH_ITEMS = 1 << 28


def karg(t):
    """A torch tensor as a kernel argument (zero-copy)."""
    t = t.detach()
    if t.is_cuda:
        return cuda.as_cuda_array(t, sync=False)
    return t.numpy()


def gaussian_table(centers, prec6, amps, half):
    """(N, NCOL) float64 table on the tensors' device from (N, 3), (N, 6), (N,), (N, 3) tensors."""
    import torch

    return torch.cat(
        [centers.detach().double(), prec6.detach().double(), amps.detach().double()[:, None], half.detach().double()],
        dim=1,
    ).contiguous()


def geometry(lattice):
    """``(off_z, off_y, off_x, st_z, st_y, st_x, n_z, n_y, n_x)`` of a ``Lattice``: floats, then ints."""
    return (*(float(v) for v in lattice.offset), *(float(v) for v in lattice.stride),
            *(int(v) for v in lattice.shape))


def row_ends(tab, geom, za, zb):
    """Inclusive prefix sums (int64 tensor, (N,)) of the Gaussians' row items in planes ``[za, zb)``, and their total."""
    import torch

    n = tab.shape[0]
    counts = torch.empty(n, dtype=torch.int64, device=tab.device)
    off_z, off_y, _, st_z, st_y, _, n_z, n_y, _ = geom
    if n:
        count_rows[blocks(n), THREADS](karg(tab), off_z, off_y, st_z, st_y, n_z, n_y, za, zb, False, karg(counts))
    ends = torch.cumsum(counts, 0)
    return ends, int(ends[-1]) if n else 0


def slabs(tab, geom, scale, counting=False):
    """Yield ``(za, zb, acc, cnt, ends, total)`` for Z slabs of the lattice: ``acc`` (int64 tensor, flat)
    holds ``round(scale * sum)`` on planes ``[za, zb)`` and, with ``counting``, ``cnt`` (int32) the
    Gaussians reaching each voxel (else a 1-element dummy); valid until the next slab is asked for."""
    import torch

    *_, n_z, n_y, n_x = geom
    plane = n_y * n_x
    per = max(1, min(n_z, SLAB_VOXELS // max(1, plane)))
    acc_all = torch.empty(per * plane, dtype=torch.int64, device=tab.device)
    cnt_all = torch.empty(per * plane if counting else 1, dtype=torch.int32, device=tab.device)
    for za in range(0, n_z, per):
        zb = min(n_z, za + per)
        acc = acc_all[: (zb - za) * plane]
        acc.zero_()
        cnt = cnt_all[: (zb - za) * plane] if counting else cnt_all
        cnt.zero_()
        ends, total = row_ends(tab, geom, za, zb)
        off_z, off_y, off_x, st_z, st_y, st_x, *_ = geom
        for i0 in range(0, total, LAUNCH_ITEMS):
            i1 = min(total, i0 + LAUNCH_ITEMS)
            splat_rows[blocks(i1 - i0), THREADS](
                karg(ends), karg(tab), i0, i1, off_z, off_y, off_x, st_z, st_y, st_x, n_z, n_y, n_x, za, zb,
                scale, karg(acc), counting, karg(cnt),
            )
        yield za, zb, acc, cnt, ends, total


def splat_lattice(tab, geom, scale):
    """The Gaussian sum on the lattice: float32 tensor (flat, C order) on ``tab``'s device.

    Also returns ``(ends, total)`` of the whole lattice when it was one slab (the
    backward pass reuses them), else None.
    """
    import torch

    *_, n_z, n_y, n_x = geom
    plane = n_y * n_x
    out = torch.empty(n_z * plane, dtype=torch.float32, device=tab.device)
    rows = None
    for za, zb, acc, _, ends, total in slabs(tab, geom, scale):
        out[za * plane : zb * plane] = acc.to(torch.float64).mul_(1.0 / scale)
        if za == 0 and zb == n_z:
            rows = (ends, total)
    return out, rows


def splat_grad(tab, geom, r, rows=None):
    """Per-Gaussian sums against the flat upstream gradient ``r`` (float32 tensor): (N, 10) float64 tensor,
    columns as ``encode._kernels.splat_backward``'s. ``rows``: ``(ends, total)`` from the forward pass."""
    import torch

    n = tab.shape[0]
    acc = torch.zeros((n, 10), dtype=torch.float64, device=tab.device)
    if n == 0:
        return acc
    off_z, off_y, off_x, st_z, st_y, st_x, n_z, n_y, n_x = geom
    ends, total = rows if rows is not None else row_ends(tab, geom, 0, n_z)
    part = torch.empty((max(1, min(total, CHUNK_ITEMS)), 3), dtype=torch.float64, device=tab.device)
    k_ends, k_tab, k_r, k_part, k_acc = karg(ends), karg(tab), karg(r), karg(part), karg(acc)
    for i0 in range(0, total, CHUNK_ITEMS):
        i1 = min(total, i0 + CHUNK_ITEMS)
        grad_rows[blocks(i1 - i0), THREADS](
            k_ends, k_tab, i0, i1, off_z, off_y, off_x, st_z, st_y, st_x, n_z, n_y, n_x, k_r, k_part,
        )
        grad_reduce[blocks(n), THREADS](k_ends, k_tab, i0, i1, off_z, off_y, st_z, st_y, n_z, n_y, k_part, k_acc)
    return acc
