"""The whole training loop on the GPU path (simulated): device placement, lattice data, relocation,
densification; the same quality as the CPU at the same steps; out-of-memory as a clear error."""

import numpy as np
import pytest

from napari_volmicro import metrics
from napari_volmicro.encode import Trainer


def _train(vol, device, steps=24):
    tr = Trainer(vol, gaussians=8, steps=steps, seed=0, device=device, relocate_every=5, densify_every=10)
    assert tr.device == device
    for _ in tr.run():
        pass
    return tr.result


def test_gpu_training_matches_cpu_quality(sim, nuclei_crop, monkeypatch):
    from napari_volmicro.encode import densify

    moved = []
    real = densify.relocate_step
    monkeypatch.setattr("napari_volmicro.encode._loop.relocate_step",
                        lambda *a, **k: moved.append(type(a[2]).__name__) or real(*a, **k))
    cpu = _train(nuclei_crop, "cpu")
    gpu = _train(nuclei_crop, "cuda")
    assert len(moved) >= 4 and set(moved) == {"ndarray"}  # relocation ran on both paths, given numpy residuals
    assert gpu.n_gaussians == cpu.n_gaussians
    p_cpu = metrics.psnr_full(nuclei_crop, cpu.decode())
    p_gpu = metrics.psnr_full(nuclei_crop, gpu.decode())
    assert p_cpu > 15
    assert abs(p_gpu - p_cpu) < 0.1  # the bound at equal steps
    np.testing.assert_allclose(gpu.centers, cpu.centers, atol=0.05)


def test_training_out_of_memory_is_a_clear_error(sim, nuclei_crop, monkeypatch):
    import torch

    from napari_volmicro import _cuda_footprint as CF
    from napari_volmicro.errors import VolmicroError

    def boom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(CF, "splat_lattice", boom)
    tr = Trainer(nuclei_crop, gaussians=8, steps=3, seed=0, device="cuda")
    with pytest.raises(VolmicroError, match=r"out of memory training 8 Gaussians on 8 x 16 x 16 voxels.*--bricks"):
        for _ in tr.run():
            pass
