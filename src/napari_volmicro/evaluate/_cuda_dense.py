"""Dense decoding and the K-strongest rule (``knn.py``) on a CUDA GPU.

``decode_into`` does what ``dense.decode_into`` does on the CPU, with the GPU
footprint kernels (``_cuda_footprint.py``, the training kernels' math): the
region is a lattice (start, step, shape); each Z slab of at most
``SLAB_VOXELS`` output voxels is summed in int64 fixed point, converted,
given the background and the output conversion (``finish``), and copied into
``out``. GPU memory stays bounded by the slab, whatever the region.

With ``k > 0`` the splat also counts the Gaussians reaching each voxel; the
voxels reached by more than ``k`` get every contribution gathered again
(``gather_rows``, computed directly), ranked, and are set to the sum of their
``k`` first (``top_k_voxels``), in batches of at most ``SLOT_BUDGET``
gathered contributions. Results equal the CPU's to float64 rounding of the
sums (exactly the same set of contributions).
"""

from __future__ import annotations

import weakref

import numpy as np

#: gathered contributions per batch of the K-strongest pass (17 bytes each)
SLOT_BUDGET = 1 << 25

_tables: dict[int, tuple[weakref.ref, object, float]] = {}


def _table(gv, device):
    """The model's GPU Gaussian table (cached per model) and its fixed-point scale."""
    import torch

    from .. import _cuda_footprint as CF
    from .._footprint import fixed_point_scale
    from . import _kernels as K
    from .dense import prepared

    key = id(gv)
    hit = _tables.get(key)
    if hit is not None and hit[0]() is gv and hit[1].device == torch.device(device):
        return hit[1], hit[2]
    g = prepared(gv)
    cols = [K.CZ, K.CY, K.CX, K.PZZ, K.PYY, K.PXX, K.PZY, K.PZX, K.PYX, K.AMP, K.EZ, K.EY, K.EX]
    assert len(cols) == CF.NCOL
    tab = torch.from_numpy(np.ascontiguousarray(g[:, cols])).to(device)
    scale = fixed_point_scale(float(np.abs(g[:, K.AMP]).sum())) if len(g) else 1.0
    _tables[key] = (weakref.ref(gv, lambda _ref, key=key: _tables.pop(key, None)), tab, scale)
    return tab, scale


def decode_into(gv, grid, out, offset=0.0, scale=1.0, is_int=False, lo=-np.inf, hi=np.inf, k=0) -> np.ndarray:
    """Fill ``out`` (``grid.shape``, C order) as ``dense.decode_into`` does; returns the K-strongest
    statistics (5,) of ``_kernels.splat_decode``."""
    from ..gpu import is_out_of_memory, out_of_memory_error

    if not out.flags.c_contiguous:
        tmp = np.empty(out.shape, out.dtype)
        stats = decode_into(gv, grid, tmp, offset, scale, is_int, lo, hi, k)
        out[...] = tmp
        return stats
    try:
        return _decode(gv, grid, out, float(offset), float(scale), bool(is_int), float(lo), float(hi), int(k))
    except Exception as e:
        if is_out_of_memory(e):
            raise out_of_memory_error(
                "decoding", out.shape, "decode smaller regions, or on the CPU (VOLMICRO_DECODE_DEVICE=cpu)"
            ) from None
        raise


def _decode(gv, grid, out, offset, scale, is_int, lo, hi, k):
    import torch
    from numba import cuda

    from .. import _cuda_footprint as CF
    from ..gpu import torch_device
    from .dense import background_weights

    dev = torch_device()
    tab, fscale = _table(gv, dev)
    geom = (*(float(v) for v in grid.start), *(float(v) for v in grid.step), *(int(v) for v in out.shape))
    bg = background_weights(gv, grid)
    has_bg = bg[0].shape[0] > 0
    if not has_bg:  # kernels want real arrays even when unused
        bg = (np.zeros((1, 1, 1)), *(np.zeros(1, np.int64) if j % 2 == 0 else np.zeros(1) for j in range(6)))
    bg = [CF.karg(torch.from_numpy(np.ascontiguousarray(a)).to(dev)) for a in bg]
    stats = np.zeros(5, np.float64)
    stats[4], stats[3] = np.inf, -np.inf
    counting = 0 < k < len(tab)
    _, ny, nx = out.shape
    plane = ny * nx
    flat = out.reshape(-1)
    out_dev = None
    for za, zb, acc, cnt, ends, total in CF.slabs(tab, geom, fscale, counting=counting):
        m = (zb - za) * plane
        vals = acc.to(torch.float64).mul_(1.0 / fscale)
        if counting:
            _keep_top_k(tab, geom, za, zb, ends, total, cnt, vals, k, stats)
        if out_dev is None:
            out_dev = cuda.device_array(acc.numel(), dtype=out.dtype)
        o = out_dev[:m]
        CF.finish[CF.blocks(m), CF.THREADS](
            CF.karg(vals), za, ny, nx, has_bg, *bg, offset, scale, is_int, lo, hi, o,
        )
        o.copy_to_host(flat[za * plane : zb * plane])
    return stats


def _keep_top_k(tab, geom, za, zb, ends, total, cnt, vals, k, stats):
    """Set the slab's voxels reached by more than ``k`` Gaussians to their K-strongest sums; update ``stats``."""
    import torch

    from .. import _cuda_footprint as CF

    over = torch.nonzero(cnt > k).flatten()
    if over.numel() == 0:
        return
    cover = cnt[over].to(torch.int64)
    upto = torch.cumsum(cover, 0)
    pos = torch.full((vals.numel(),), -1, dtype=torch.int32, device=vals.device)
    off_z, off_y, off_x, st_z, st_y, st_x, n_z, n_y, n_x = geom
    a = 0
    n_over = over.numel()
    while a < n_over:
        first = int(upto[a - 1]) if a else 0
        b = int(torch.searchsorted(upto, first + SLOT_BUDGET, right=True))
        b = min(n_over, max(b, a + 1))
        idx = over[a:b]
        cov = cover[a:b]
        base = torch.cumsum(cov, 0) - cov
        slots = int(cov.sum())
        pos.fill_(-1)
        pos[idx] = torch.arange(b - a, dtype=torch.int32, device=vals.device)
        fill = torch.zeros(b - a, dtype=torch.int64, device=vals.device)
        cvals = torch.empty(slots, dtype=torch.float64, device=vals.device)
        ids = torch.empty(slots, dtype=torch.int32, device=vals.device)
        keep = torch.empty(slots, dtype=torch.uint8, device=vals.device)
        args = [CF.karg(x) for x in (pos, base, fill, cvals, ids)]
        for i0 in range(0, total, CF.LAUNCH_ITEMS):
            i1 = min(total, i0 + CF.LAUNCH_ITEMS)
            CF.gather_rows[CF.blocks(i1 - i0), CF.THREADS](
                CF.karg(ends), CF.karg(tab), i0, i1, off_z, off_y, off_x, st_z, st_y, st_x, n_z, n_y, n_x, za, zb,
                *args,
            )
        kept = torch.empty(b - a, dtype=torch.float64, device=vals.device)
        CF.top_k_voxels[CF.blocks(b - a), CF.THREADS](
            CF.karg(base), CF.karg(fill), CF.karg(cvals), CF.karg(ids), CF.karg(keep), k, CF.karg(kept),
        )
        exact = vals[idx]
        d = exact - kept
        stats[0] += b - a
        stats[1] += float((d * d).sum())
        stats[2] = max(stats[2], float(d.abs().max()))
        stats[3] = max(stats[3], float(exact.max()))
        stats[4] = min(stats[4], float(exact.min()))
        vals[idx] = kept
        a = b
