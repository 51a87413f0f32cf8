"""metrics.py against hand-computed values and known properties."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from napari_volmicro import metrics

DATA = Path(__file__).parent / "data"


def _ramp(shape=(8, 9, 10), lo=10.0, hi=110.0) -> np.ndarray:
    n = int(np.prod(shape))
    return np.linspace(lo, hi, n).reshape(shape)


# -- PSNR ------------------------------------------------------------------------


def test_identical_is_infinite():
    a = _ramp()
    assert metrics.psnr_full(a, a.copy()) == math.inf
    assert metrics.psnr_fg(a, a.copy()) == math.inf


@pytest.mark.parametrize("d", [0.5, 1.0, 7.0])
def test_uniform_offset(d):
    a = _ramp(lo=10.0, hi=110.0)  # peak = 100
    expected = 20 * math.log10(100.0 / d)
    assert metrics.psnr_full(a, a + d) == pytest.approx(expected, abs=1e-9)
    assert metrics.psnr_full(a, a - d) == pytest.approx(expected, abs=1e-9)
    assert metrics.psnr_fg(a, a + d) == pytest.approx(expected, abs=1e-9)


def test_hand_computed_mse():
    a = np.zeros((2, 2, 2))
    a[0, 0, 0] = 4.0  # peak 4
    b = a.copy()
    b[1, 1, 1] = 2.0  # one error of 2 over 8 voxels -> mse 0.5
    assert metrics.mse(a, b) == pytest.approx(0.5)
    assert metrics.psnr_full(a, b) == pytest.approx(10 * math.log10(16 / 0.5))


def test_peak_comes_from_the_original_not_the_reconstruction():
    a = _ramp(lo=0.0, hi=50.0)
    b = a.copy()
    b[0, 0, 0] = 1000.0  # huge error; the peak must still be 50
    mse = (1000.0 - 0.0) ** 2 / a.size
    assert metrics.psnr_full(a, b) == pytest.approx(10 * math.log10(50.0**2 / mse))


def test_integer_inputs_do_not_wrap_around():
    a = np.full((8, 8, 8), 10, np.uint8)
    a[0, 0, 0] = 110
    b = a.copy()
    b[1:] = 5  # below the original: uint8 subtraction would wrap to 251
    mse = 25.0 * b[1:].size / a.size
    assert metrics.psnr_full(a, b) == pytest.approx(10 * math.log10(100.0**2 / mse))


def test_constant_original_with_errors_is_minus_infinity():
    a = np.full((8, 8, 8), 3.0)
    assert metrics.psnr_full(a, a) == math.inf
    assert metrics.psnr_full(a, a + 1) == -math.inf


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.psnr_full(np.zeros((8, 8, 8)), np.zeros((8, 8, 9)))
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.ssim3d(np.zeros((8, 8, 8)), np.zeros((9, 8, 8)))


# -- foreground mask and psnr_fg ------------------------------------------------------


def test_foreground_mask_is_threshold_dilated_by_two():
    a = np.full((15, 15, 15), 20.0)
    a[7, 7, 7] = 120.0
    mask = metrics.foreground_mask(a)
    expected = np.zeros_like(mask)
    expected[5:10, 5:10, 5:10] = True  # 3x3x3 structure twice: a 5x5x5 cube
    np.testing.assert_array_equal(mask, expected)


def test_foreground_threshold_is_median_plus_one_percent_of_range():
    a = np.full((16, 16, 16), 100.0)  # median 100
    a[0, 0, 0] = 1100.0  # max: threshold = 100 + 0.01 * 1000 = 110
    a[10, 10, 10] = 110.0  # not above the threshold
    a[3, 12, 12] = 110.5  # above it
    mask = metrics.foreground_mask(a)
    assert mask[3, 12, 12] and mask[0, 0, 0]
    assert not mask[10, 10, 10]
    assert mask.sum() == 27 + 5**3  # corner cube clipped to 3x3x3, interior 5x5x5


def test_empty_foreground_mask():
    assert not metrics.foreground_mask(np.zeros((8, 8, 8))).any()


def test_psnr_fg_ignores_background_errors():
    a = np.full((15, 15, 15), 20.0)
    a[7, 7, 7] = 120.0  # peak 100, fg = the 5x5x5 cube
    b = a.copy()
    b[0] += 30.0  # background error only
    assert metrics.psnr_fg(a, b) == math.inf
    assert metrics.psnr_full(a, b) < 30
    b[7, 7, 7] -= 10.0  # one foreground error of 10 over 125 fg voxels
    assert metrics.psnr_fg(a, b) == pytest.approx(10 * math.log10(100.0**2 / (100.0 / 125)))


def test_psnr_fg_with_explicit_mask():
    a = _ramp()
    b = a + 2.0
    mask = np.zeros(a.shape, bool)
    mask[0, 0, :] = True
    b[1:] += 50.0
    assert metrics.psnr_fg(a, b, mask=mask) == pytest.approx(20 * math.log10(100.0 / 2.0))


# -- SSIM ----------------------------------------------------------------------------


def _ssim_single_window(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """Textbook SSIM of one 7x7x7 window with sample (N-1) covariances."""
    n = x.size
    mx, my = x.mean(), y.mean()
    vx = ((x - mx) ** 2).sum() / (n - 1)
    vy = ((y - my) ** 2).sum() / (n - 1)
    cxy = ((x - mx) * (y - my)).sum() / (n - 1)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def test_ssim3d_matches_hand_computed_single_window():
    # a 7x7x7 volume holds exactly one valid 7x7x7 window (the border of 3 is cropped)
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 100, (7, 7, 7))
    y = 0.8 * x + rng.normal(0, 5, x.shape) + 3
    expected = _ssim_single_window(x, y, float(x.max() - x.min()))
    assert metrics.ssim3d(x, y) == pytest.approx(expected, rel=1e-9)


def test_ssim3d_properties():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 100, (12, 12, 12))
    assert metrics.ssim3d(x, x) == pytest.approx(1.0)
    small = metrics.ssim3d(x, x + rng.normal(0, 2, x.shape))
    large = metrics.ssim3d(x, x + rng.normal(0, 20, x.shape))
    assert 1.0 > small > large


def test_ssim3d_uses_the_original_range():
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 10, (9, 9, 9))
    y = x + rng.normal(0, 1, x.shape)
    # scaling both by 10 keeps SSIM (data_range follows the original)
    assert metrics.ssim3d(10 * x, 10 * y) == pytest.approx(metrics.ssim3d(x, y), rel=1e-9)


# -- sizes --------------------------------------------------------------------------


def test_bpp_and_ratio():
    assert metrics.bpp(1000, 8000) == 1.0
    assert metrics.bpp(73, 8000) == pytest.approx(0.073)
    assert metrics.ratio(1000, 8000, 2) == 16.0
    assert metrics.ratio(100, 8000, 4) == 320.0


def test_quality_report_on_real_data():
    original = np.asarray(__import__("tifffile").imread(DATA / "cellseg3d_nuclei.tif"))[:32, :40, :40]
    recon = original + 5.0
    report = metrics.quality_report(original, recon, file_bytes=original.size // 8)
    peak = float(original.max() - original.min())
    assert report["psnr_full"] == pytest.approx(20 * math.log10(peak / 5.0))
    assert report["psnr_fg"] == pytest.approx(report["psnr_full"])
    assert 0.9 < report["ssim3d"] < 1.0
    assert report["bpp"] == pytest.approx(1.0)
    assert report["ratio"] == pytest.approx(32.0)  # float32 input: 32 bits per voxel / 1 bpp
    assert report["file_bytes"] == original.size // 8
    assert set(metrics.quality_report(original, recon)) == {"psnr_full", "psnr_fg", "ssim3d"}
