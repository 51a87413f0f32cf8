"""Shared fixtures: a small Gaussian model, its .vmg file, and a small real crop."""

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture
def small_model():
    """50 random Gaussians on a (24, 40, 36) grid, Z spacing 2, uint16 mapping."""
    from napari_volmicro.intensity import IntensityMapping
    from napari_volmicro.synthetic import random_volume

    return random_volume(
        shape=(24, 40, 36), n=50, seed=4, mapping=IntensityMapping(100.0, 1000.0, np.uint16)
    ).replace(spacing=(2.0, 1.0, 1.0))


@pytest.fixture
def vmg_file(tmp_path, small_model):
    from napari_volmicro.container import save

    return save(small_model, tmp_path / "model.vmg")


@pytest.fixture
def bead_crop():
    """A 16 x 32 x 32 crop of the real bead stack around its brightest voxel (float32)."""
    import tifffile

    vol = tifffile.imread(DATA / "bead_flowdec.tif").astype(np.float32)
    z, y, x = np.unravel_index(np.argmax(vol), vol.shape)
    z0 = int(np.clip(z - 8, 0, vol.shape[0] - 16))
    y0 = int(np.clip(y - 16, 0, vol.shape[1] - 32))
    x0 = int(np.clip(x - 16, 0, vol.shape[2] - 32))
    return np.ascontiguousarray(vol[z0 : z0 + 16, y0 : y0 + 32, x0 : x0 + 32])


@pytest.fixture
def viewer_factory(make_napari_viewer):
    """``make_napari_viewer`` that lets background workers finish before the viewers go."""
    yield make_napari_viewer
    from qtpy.QtCore import QThreadPool
    from qtpy.QtWidgets import QApplication

    QThreadPool.globalInstance().waitForDone(20_000)
    QApplication.processEvents()


@pytest.fixture(scope="module")
def client():
    """A module-scoped in-process dask client with one worker (bricked-encoding tests)."""
    from napari_volmicro.bricks import make_client

    c = make_client(workers=1, processes=False)
    yield c
    cluster = c.cluster
    c.close()
    cluster.close()
