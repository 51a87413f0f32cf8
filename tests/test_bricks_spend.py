"""Bricked encoding of textured tissue: every brick that holds tissue is trained, and the file
spends its byte budget (within 2%).

The volume is real two-photon tissue (``data/cellfinder_tissue_crop.tif``, 12 x 64 x 64 uint16)
with a 2 x 2 x 2 hot spot at the full stack's maximum (19445) in one brick: relative to that
maximum, the old occupancy rule called the brick of plain tissue (maximum 529) pure background.
"""

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_volmicro.bricks import compress_bricked
from napari_volmicro.bricks.encode_bricks import brick_stats_task, make_plan
from napari_volmicro.bricks.layout import BrickGrid
from napari_volmicro.gaussians import GaussianVolume
from napari_volmicro.intensity import IntensityMapping

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def tissue():
    v = tifffile.imread(DATA / "cellfinder_tissue_crop.tif").copy()
    v[5:7, 10:12, 10:12] = 19445
    return v



class _Array:
    """Just enough of a ChunkedVolume for ``brick_stats_task``."""

    def __init__(self, v):
        self.v = v

    def read(self, slices):
        return self.v[slices]


def _plan(v, brick, **budget):
    grid = BrickGrid(v.shape, brick, 4)
    stats = [brick_stats_task(_Array(v), b) for b in grid]
    return grid, stats, make_plan(stats, grid, v.dtype.itemsize, **{"bpp": None, "ratio": None, "gaussians": None,
                                                                     **budget})


def test_every_tissue_brick_gets_budget(tissue):
    grid, stats, plan = _plan(tissue, (12, 32, 32), bpp=0.3)
    assert not plan.background.any()
    assert (plan.brick_bytes > 0).all()
    # the plain-tissue brick is one the old rule (max <= level + 3% of (global max - level)) skipped
    gmax = max(s.core_max for s in stats)
    old = [s.core_max <= s.level + 0.03 * (gmax - s.level) for s in stats]
    assert old == [False, False, False, True]
    # and its share is of the same order as the others' (texture everywhere, not only cells):
    # more than a fifth of an equal share (the old rule gave it nothing)
    shares = plan.brick_bytes / plan.brick_bytes.sum()
    assert shares.min() > 0.2 / len(shares)


def test_flat_and_noise_only_bricks_stay_background():
    rng = np.random.default_rng(1)
    v = np.full((8, 16, 48), 300.0, np.float32)
    v[:, :, 16:32] += rng.normal(0, 5.0, (8, 16, 16)).astype(np.float32)  # noise only
    v[:, :, 32:] += rng.normal(0, 5.0, (8, 16, 16)).astype(np.float32)
    v[3:5, 6:9, 38:41] += 400  # structure
    # a budget well above the three bricks' table entries and header (0.5 bpp would leave 16 payload bytes)
    _, _, plan = _plan(v, (8, 16, 16), bpp=4.0)
    assert plan.background.tolist() == [True, True, False]
    assert plan.brick_bytes[2] > 0 and plan.brick_bytes[:2].sum() == 0


class PlainEncoder:
    """Stand-in encoder: one isotropic Gaussian per 4^3 block at the block's mean (driver only)."""

    def __call__(self, data, spacing, *, gaussians, seed, **kwargs):
        data = np.asarray(data, np.float64)
        off = float(data.min())
        scale = float(data.max() - off) or 1.0
        pts = np.stack(np.meshgrid(*[np.arange(1.5, n, 4) for n in data.shape], indexing="ij"), -1).reshape(-1, 3)
        pts = pts[:gaussians]
        vals = np.array([(data[tuple(int(p) for p in pt)] - off) / scale for pt in pts])
        n = len(pts)
        return GaussianVolume(data.shape, pts.astype(np.float32), np.full((n, 3), 1.5, np.float32),
                              np.tile(np.float32([1, 0, 0, 0]), (n, 1)), vals.astype(np.float32),
                              mapping=IntensityMapping(off, scale, np.float32))


def test_bricked_tissue_trains_every_brick(tissue, tmp_path, client):
    report = compress_bricked(tissue, tmp_path / "t.vmg", brick=(12, 32, 32), halo=4, bpp=0.3, client=client,
                              encoder=PlainEncoder())
    assert report["bricks"] == 4 and report["encoded"] == 4 and report["background"] == 0


def test_bricked_real_encoder_spends_the_budget(tissue, tmp_path, client):
    budget = int(0.3 * tissue.size / 8)
    report = compress_bricked(tissue, tmp_path / "r.vmg", brick=(12, 32, 32), halo=4, bpp=0.3, client=client,
                              steps=40)
    assert report["encoded"] == 4
    assert 0.98 * budget <= report["file_bytes"] <= budget, (report["file_bytes"], budget)
