"""Checks of the GPU kernels under numba's CUDA simulator (run by ``tests/test_gpu_sim.py``).

Files here are named ``check_*.py`` so the main test run does not collect
them: they need ``NUMBA_ENABLE_CUDASIM=1`` set before numba is imported, so
they run in their own process. Models are trained (on the CPU) from tiny crops
of the real volumes in ``tests/data``: the simulator runs a Python thread per
CUDA thread, so every problem here is a few hundred to a few thousand items.
"""

import os
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parent.parent / "data"

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":  # pragma: no cover - guarded by the runner
    pytest.skip("run through tests/test_gpu_sim.py (needs NUMBA_ENABLE_CUDASIM=1)", allow_module_level=True)


def _crop(name, shape):
    import tifffile

    vol = tifffile.imread(DATA / name)
    z, y, x = np.unravel_index(np.argmax(vol), vol.shape)
    lo = [int(np.clip(c - s // 2, 0, n - s)) for c, s, n in zip((z, y, x), shape, vol.shape)]
    return np.ascontiguousarray(vol[lo[0] : lo[0] + shape[0], lo[1] : lo[1] + shape[1], lo[2] : lo[2] + shape[2]])


@pytest.fixture(scope="session")
def sim():
    """The GPU path enabled on the simulator (torch tensors on the CPU, kernels simulated)."""
    from napari_volmicro import gpu

    gpu.allow_simulator()
    assert gpu.cuda_status() == (True, "simulator")
    return gpu


@pytest.fixture(scope="session")
def nuclei_crop():
    """8 x 16 x 16 float32 crop of the real nuclei stack around its brightest voxel."""
    return _crop("cellseg3d_nuclei.tif", (8, 16, 16))


@pytest.fixture(scope="session")
def neuron_crop():
    """8 x 20 x 20 uint8 crop of the real neuron stack around its brightest voxel."""
    return _crop("rivuletpy_neuron.tif", (8, 20, 20))


def _train_cpu(vol, n, steps=40, **kw):
    from napari_volmicro.encode import compress

    return compress(vol, gaussians=n, steps=steps, seed=0, device="cpu", **kw)


@pytest.fixture(scope="session")
def nuclei_model(nuclei_crop):
    """A model the encoder trained (CPU) from the nuclei crop: 12 Gaussians and a background field."""
    return _train_cpu(nuclei_crop, 12)


@pytest.fixture(scope="session")
def neuron_model(neuron_crop):
    """A model trained from the uint8 neuron crop (integer output conversion)."""
    return _train_cpu(neuron_crop, 10)
