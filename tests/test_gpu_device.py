"""Device choice on a machine without a GPU (CI): auto is the CPU, an explicit cuda is a clear error,
decoding stays on the CPU, and benchmarks/gpu.py says so and exits 0."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_volmicro import gpu
from napari_volmicro.errors import InputError

ROOT = Path(__file__).resolve().parent.parent


def test_no_gpu_here():
    ok, why = gpu.cuda_status()
    assert not ok and why


def test_auto_is_cpu_and_cuda_is_an_input_error(bead_crop):
    from napari_volmicro.encode import Trainer
    from napari_volmicro.encode.trainer import resolve_device

    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(InputError, match="device 'cuda' requested for training but the GPU path is not available"):
        resolve_device("cuda")
    with pytest.raises(InputError, match="device 'cuda'"):
        Trainer(bead_crop, gaussians=4, steps=2, device="cuda")
    with pytest.raises(InputError, match="device must be"):
        resolve_device("gpu")
    assert Trainer(bead_crop, gaussians=4, steps=2).device == "cpu"


def test_decoding_stays_on_the_cpu(small_model):
    assert not gpu.decode_on_gpu(10**9)
    region = (slice(0, 24), slice(0, 40), slice(0, 36))
    want = small_model.decode(region)
    gpu.set_decode_device("cpu")
    try:
        np.testing.assert_array_equal(small_model.decode(region), want)
        gpu.set_decode_device("cuda")
        with pytest.raises(InputError, match="device 'cuda' requested for decoding"):
            small_model.decode(region)
    finally:
        gpu.set_decode_device(None)
    with pytest.raises(InputError, match="decode device"):
        gpu.set_decode_device("tpu")


def test_out_of_memory_recognised():
    import torch

    assert gpu.is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory."))
    assert gpu.is_out_of_memory(RuntimeError("[2] Call to cuMemAlloc results in CUDA_ERROR_OUT_OF_MEMORY"))
    assert not gpu.is_out_of_memory(RuntimeError("out of range"))
    err = gpu.out_of_memory_error("decoding", (100, 647, 813), "use bricks")
    assert "100 x 647 x 813 voxels (52.6 Mvoxel)" in str(err) and "use bricks" in str(err)


def test_gpu_benchmark_without_a_gpu_says_so():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("no CUDA GPU"), r.stdout


def test_dask_workers_each_take_a_gpu(monkeypatch):
    """encode_brick_task's GPU choice: worker k of a LocalCluster takes GPU k mod count (torch and numba)."""
    import distributed
    import torch
    from numba import cuda

    from napari_volmicro.bricks import encode_bricks

    chosen = []

    class Worker:
        name = 3

    monkeypatch.setattr(distributed, "get_worker", lambda: Worker())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: chosen.append(("torch", i)))
    monkeypatch.setattr(cuda, "select_device", lambda i: chosen.append(("numba", i)), raising=False)
    encode_bricks.use_worker_gpu("cpu")
    assert chosen == []
    encode_bricks.use_worker_gpu("cuda")
    assert chosen == [("torch", 1), ("numba", 1)]
    Worker.name = "tcp://a:1"  # a worker named by hand: keeps the GPU it sees
    encode_bricks.use_worker_gpu("cuda")
    assert len(chosen) == 2
