"""Issue 15, item 5: metrics in bounded memory, equal to the whole-volume reference.

``ssim3d`` runs scikit-image tile by tile (float64, its own code), the PSNRs sum their errors
slab by slab; the values must equal the one-call whole-volume computation (the one the
benchmarks' recorded numbers came from) within floating-point summation order, and the peak
memory must not grow with the volume.
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from napari_volmicro import metrics


def _pair(shape, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), -1)
    a = np.zeros(shape)
    for _ in range(6):
        c = rng.uniform(0, 1, 3) * (np.asarray(shape) - 1)
        a += 500 * np.exp(-(((grid - c) / 3.0) ** 2).sum(-1))
    b = a + rng.normal(0, 8, shape)
    if np.dtype(dtype).kind == "u":
        return np.clip(a, 0, 65535).astype(dtype), np.clip(b, 0, 65535).astype(dtype)
    return a.astype(dtype), b.astype(dtype)


@pytest.mark.parametrize("shape", [(7, 7, 7), (8, 9, 10), (23, 31, 17), (40, 20, 70)])
@pytest.mark.parametrize("tile_voxels", [400, 20_000, metrics.TILE_VOXELS])
def test_tiled_ssim_equals_the_whole_volume_call(shape, tile_voxels):
    a, b = _pair(shape)
    assert metrics.ssim3d(a, b, tile_voxels=tile_voxels) == pytest.approx(metrics.ssim3d_whole(a, b), abs=1e-12)


def test_tiled_ssim_on_integer_volumes_and_identity():
    a, b = _pair((20, 30, 40), seed=1, dtype=np.uint16)
    assert metrics.ssim3d(a, b, tile_voxels=5000) == pytest.approx(metrics.ssim3d_whole(a, b), abs=1e-12)
    assert metrics.ssim3d(a, a.copy(), tile_voxels=5000) == pytest.approx(1.0, abs=1e-12)


def test_too_small_volumes_fail_as_scikit_image_does():
    a = np.zeros((5, 20, 20), np.float32)
    with pytest.raises(ValueError, match="win_size"):
        metrics.ssim3d(a, a)


def test_psnr_slabs_equal_the_plain_formula():
    a, b = _pair((30, 40, 50), seed=2)
    d = a.astype(np.float64) - b.astype(np.float64)
    peak = float(a.max()) - float(a.min())
    assert metrics.psnr_full(a, b) == pytest.approx(10 * math.log10(peak**2 / np.mean(d * d)), abs=1e-10)
    mask = metrics.foreground_mask(a)
    assert metrics.psnr_fg(a, b) == pytest.approx(10 * math.log10(peak**2 / np.mean(d[mask] ** 2)), abs=1e-10)
    assert metrics.flat_psnr(a) == pytest.approx(10 * math.log10(peak**2 / np.var(a.astype(np.float64))), abs=1e-10)


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_is_bounded_by_the_tile_not_the_volume():
    a, b = _pair((64, 128, 128), seed=3)  # 1 Mvoxel, 4 MB each
    whole = _peak_bytes(lambda: metrics.ssim3d_whole(a, b))
    tiled = _peak_bytes(lambda: metrics.ssim3d(a, b, tile_voxels=50_000))
    psnr = _peak_bytes(lambda: (metrics.psnr_full(a, b), metrics.flat_psnr(a)))
    assert whole > 100e6  # scikit-image on the whole volume: ~130 bytes per voxel
    assert tiled < 20e6, tiled  # ~130 bytes x 50,000 voxels per tile, plus the tile's own copies
    assert psnr < 30e6, psnr  # float64 slabs of 2**20 voxels
