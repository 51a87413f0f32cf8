"""Quality and size metrics, defined exactly as in METHOD-NOTES 6.

- ``psnr_full``: all voxels, peak = max - min of the original.
- ``psnr_fg``: same peak, only foreground voxels (``foreground_mask``).
- ``ssim3d``: scikit-image ``structural_similarity`` on the 3D volume,
  ``data_range = max - min`` of the original.
- ``bpp`` = 8 * file bytes / voxels (the whole file);
  ``ratio`` = original bytes (voxels * itemsize of the input dtype) / file bytes.
"""

from __future__ import annotations

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


def mse(original: np.ndarray, recon: np.ndarray, mask: np.ndarray | None = None) -> float:
    _check_pair(original, recon)
    d = original.astype(np.float64) - recon.astype(np.float64)
    if mask is not None:
        d = d[mask]
    return float(np.mean(d * d)) if d.size else 0.0


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


def ssim3d(original: np.ndarray, recon: np.ndarray) -> float:
    """3D SSIM (scikit-image defaults: 7x7x7 window), data_range = max - min of ``original``."""
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
