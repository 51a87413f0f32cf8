"""Quality and size metrics, defined exactly as in METHOD-NOTES 6.

- ``psnr_full``: all voxels, peak = max - min of the original.
- ``psnr_fg``: same peak, only foreground voxels (``foreground_mask``).
- ``ssim3d``: scikit-image ``structural_similarity`` on the 3D volume,
  ``data_range = max - min`` of the original.
- ``bpp`` = 8 * file bytes / voxels (the whole file);
  ``ratio`` = original bytes (voxels * itemsize of the input dtype) / file bytes.
- ``flat_psnr``: the PSNR of the best constant volume (the mean): a model at
  or below it explains nothing of the volume.

Memory is bounded whatever the volume's size: errors are summed slab by slab
in float64, and ``ssim3d`` runs scikit-image (float64, its own code) on
overlapping tiles of at most about ``TILE_VOXELS`` voxels (each tile read
with the 3-voxel margin the 7-voxel window needs) and averages the tiles'
interior SSIM maps. The result equals scikit-image on the whole volume up
to floating-point summation order (within 1e-12; tested), and the peak
memory is about 130 bytes x ``TILE_VOXELS`` instead of 130 bytes per voxel
(a 100 x 647 x 813 volume needed 7.3 GB).
"""

from __future__ import annotations

import itertools

import numpy as np

#: Foreground threshold: median + FG_FRACTION * (max - median) of the original.
FG_FRACTION = 0.01
#: The thresholded foreground is dilated by this many voxels (3x3x3 steps).
FG_DILATION = 2


def _peak(original: np.ndarray) -> float:
    lo, hi = float(np.min(original)), float(np.max(original))
    return hi - lo


def _check_pair(original, recon):
    if original.shape != recon.shape:
        raise ValueError(f"shapes differ: original {original.shape}, reconstruction {recon.shape}")


#: voxels per slab of the error sums
SLAB_VOXELS = 1 << 20
#: most voxels of one ``ssim3d`` tile, margins included (scikit-image needs ~130 bytes per voxel)
TILE_VOXELS = 2_000_000
#: scikit-image's default SSIM window (voxels per axis) and the margin it needs on each side
SSIM_WIN = 7
_SSIM_PAD = (SSIM_WIN - 1) // 2


def _slabs(shape, voxels: int = SLAB_VOXELS):
    """Slices of whole Z planes, about ``voxels`` voxels each."""
    plane = max(1, int(np.prod(shape[1:], dtype=np.int64)))
    step = max(1, voxels // plane)
    for z in range(0, shape[0], step):
        yield slice(z, min(z + step, shape[0]))


def mse(original: np.ndarray, recon: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean squared error (float64), over ``mask`` (bool, same shape) when given."""
    _check_pair(original, recon)
    total, count = 0.0, 0
    for sl in _slabs(original.shape):
        d = np.asarray(original[sl], np.float64) - np.asarray(recon[sl], np.float64)
        if mask is not None:
            d = d[mask[sl]]
        total += float(np.dot(d.ravel(), d.ravel()))
        count += d.size
    return total / count if count else 0.0


def flat_psnr(original: np.ndarray) -> float:
    """PSNR (dB) of the constant volume at the mean of ``original``, same peak as ``psnr_full``."""
    n = original.size
    mean = sum(float(np.sum(original[sl], dtype=np.float64)) for sl in _slabs(original.shape)) / n
    var = 0.0
    for sl in _slabs(original.shape):
        d = np.asarray(original[sl], np.float64) - mean
        var += float(np.dot(d.ravel(), d.ravel()))
    return psnr_from_mse(var / n, _peak(original))


def psnr_from_mse(m: float, peak: float) -> float:
    if m <= 0:
        return float("inf")
    if peak <= 0:
        return float("-inf") if m > 0 else float("inf")
    return float(10.0 * np.log10(peak * peak / m))


def psnr_full(original: np.ndarray, recon: np.ndarray) -> float:
    """PSNR over all voxels (dB), peak = max - min of ``original``."""
    return psnr_from_mse(mse(original, recon), _peak(original))


def foreground_mask(original: np.ndarray) -> np.ndarray:
    """Voxels above median + 1% of (max - median), dilated by 2 voxels (bool array)."""
    from scipy import ndimage

    med = float(np.median(original))
    thr = med + FG_FRACTION * (float(np.max(original)) - med)
    mask = original > thr
    if FG_DILATION and mask.any():
        mask = ndimage.binary_dilation(mask, structure=np.ones((3, 3, 3), bool), iterations=FG_DILATION)
    return mask


def psnr_fg(original: np.ndarray, recon: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR over foreground voxels only (dB), same peak as ``psnr_full``."""
    if mask is None:
        mask = foreground_mask(original)
    return psnr_from_mse(mse(original, recon, mask), _peak(original))


def ssim3d(original: np.ndarray, recon: np.ndarray, tile_voxels: int = TILE_VOXELS) -> float:
    """3D SSIM (scikit-image defaults: 7x7x7 window), data_range = max - min of ``original``.

    Computed tile by tile in bounded memory (module doc); ``ssim3d_whole`` is the one-call reference.
    """
    from skimage.metrics import structural_similarity

    _check_pair(original, recon)
    shape = original.shape
    if original.ndim != 3 or min(shape) < SSIM_WIN:
        return ssim3d_whole(original, recon)  # scikit-image explains what it cannot do
    rng = _peak(original) or 1.0
    p = _SSIM_PAD
    cores = _tile_cores(tuple(n - 2 * p for n in shape), tile_voxels)
    starts = [range(p, n - p, c) for n, c in zip(shape, cores)]
    total, count = 0.0, 0
    for z0, y0, x0 in itertools.product(*starts):
        core = [(a, min(a + c, n - p)) for a, c, n in zip((z0, y0, x0), cores, shape)]
        read = tuple(slice(a - p, b + p) for a, b in core)
        _, s_map = structural_similarity(
            np.asarray(original[read], np.float64), np.asarray(recon[read], np.float64), data_range=rng, full=True
        )
        inner = s_map[p:-p, p:-p, p:-p]
        total += float(inner.sum(dtype=np.float64))
        count += inner.size
    return total / count


def _tile_cores(interior, tile_voxels: int) -> tuple[int, int, int]:
    """Core tile sizes (ZYX) covering ``interior`` with read boxes (core + margins) of at most
    ``tile_voxels`` voxels where possible: X whole first, then Y, then Z (long rows, few tiles)."""
    p2 = 2 * _SSIM_PAD
    core = list(interior)
    for axis in (0, 1, 2):  # shrink Z first, then Y, then X
        others = int(np.prod([c + p2 for a, c in enumerate(core) if a != axis], dtype=np.int64))
        fit = tile_voxels // max(1, others) - p2
        core[axis] = int(max(min(core[axis], fit), min(core[axis], 8)))
        if int(np.prod([c + p2 for c in core], dtype=np.int64)) <= tile_voxels:
            break
    return tuple(max(1, c) for c in core)


def ssim3d_whole(original: np.ndarray, recon: np.ndarray) -> float:
    """``ssim3d`` in one scikit-image call on the whole volume (about 130 bytes per voxel): the reference."""
    from skimage.metrics import structural_similarity

    _check_pair(original, recon)
    rng = _peak(original) or 1.0
    return float(
        structural_similarity(original.astype(np.float64), recon.astype(np.float64), data_range=rng)
    )


def bpp(file_bytes: int, n_voxels: int) -> float:
    return 8.0 * file_bytes / n_voxels


def ratio(file_bytes: int, n_voxels: int, itemsize: int) -> float:
    return n_voxels * itemsize / file_bytes


def quality_report(original: np.ndarray, recon: np.ndarray, file_bytes: int | None = None) -> dict:
    """All metrics as a dict (``bpp``/``ratio`` only when ``file_bytes`` is given)."""
    out = {
        "psnr_full": psnr_full(original, recon),
        "psnr_fg": psnr_fg(original, recon),
        "ssim3d": ssim3d(original, recon),
    }
    if file_bytes is not None:
        out["file_bytes"] = int(file_bytes)
        out["bpp"] = bpp(file_bytes, original.size)
        out["ratio"] = ratio(file_bytes, original.size, original.dtype.itemsize)
    return out
