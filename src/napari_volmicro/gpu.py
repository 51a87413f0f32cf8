"""Where the CUDA GPU path exists, and the errors when it cannot be used.

The GPU path needs three things: a CUDA build of torch that sees a GPU (device
memory, the optimiser), numba's CUDA target (``pip install
napari-volmicro[gpu]``, which brings numba-cuda) and a kernel that compiles
and runs there (checked once per process with a trivial probe). ``auto``
picks the GPU only when all three hold; anything short of that is the CPU
path, silently for ``auto`` and as an ``InputError`` for an explicit
``cuda``.

Decoding: ``VOLMICRO_DECODE_DEVICE`` (``auto``, ``cpu`` or ``cuda``; default
``auto``) or ``set_decode_device`` chooses where dense decodes run; ``auto``
uses the GPU for regions of at least ``GPU_DECODE_MIN_VOXELS`` output voxels
(below that a decode is a few milliseconds on the CPU and the GPU's launch and
copy latency would not pay).

Importing this module imports nothing heavy; the checks import torch and numba
on first use.
"""

from __future__ import annotations

import os
import threading

from .errors import InputError, VolmicroError

DEVICES = ("auto", "cpu", "cuda")

#: ``auto`` decodes on the GPU from this many output voxels on (a 64^3 region)
GPU_DECODE_MIN_VOXELS = 1 << 18

_lock = threading.Lock()
_status: tuple[bool, str] | None = None
_simulator_ok = False
_decode_device: str | None = None


def _simulator() -> bool:
    from numba.core import config

    return bool(config.ENABLE_CUDASIM)


def _driver_present() -> bool:
    """Whether an NVIDIA driver is installed (cheap: no torch or CUDA initialisation)."""
    import ctypes.util
    import glob

    return bool(glob.glob("/dev/nvidia[0-9]*") or ctypes.util.find_library("cuda")
                or ctypes.util.find_library("nvcuda"))


def _check() -> tuple[bool, str]:
    if not _simulator_ok and not _driver_present():
        return False, "no NVIDIA GPU driver found"
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is a dependency
        return False, f"torch is not importable ({e})"
    sim = _simulator()
    if sim and not _simulator_ok:
        return False, "numba's CUDA simulator is on (NUMBA_ENABLE_CUDASIM)"
    if not sim and not torch.cuda.is_available():
        return False, "torch sees no CUDA GPU (a CPU build of torch, or no GPU)"
    try:
        from numba import cuda
    except Exception as e:  # noqa: BLE001 - any import failure means no GPU kernels
        return False, f"numba's CUDA target is not importable ({e}); pip install napari-volmicro[gpu]"
    try:
        if not sim and not cuda.is_available():
            return False, "numba sees no CUDA GPU (pip install napari-volmicro[gpu] brings numba-cuda)"
        from . import _cuda_footprint as CF

        out = torch.zeros(4, dtype=torch.int64, device=torch_device())
        CF.probe[1, CF.THREADS](CF.karg(out))
        if out.tolist() != [0, 1, 2, 3]:
            return False, "the GPU probe kernel returned wrong values"
    except Exception as e:  # noqa: BLE001 - a driver/toolkit mismatch shows up here
        return False, f"GPU kernels do not compile or run here ({type(e).__name__}: {e})"
    return True, "simulator" if sim else torch.cuda.get_device_name()


def cuda_status() -> tuple[bool, str]:
    """``(usable, reason)``: whether the GPU path works in this process (checked once), and why not."""
    global _status
    with _lock:
        if _status is None:
            _status = _check()
        return _status


def cuda_available() -> bool:
    return cuda_status()[0]


def allow_simulator() -> None:
    """Tests only: let numba's CUDA simulator stand in for a GPU (torch tensors stay on the CPU)."""
    global _simulator_ok, _status
    _simulator_ok = True
    _status = None


def torch_device() -> str:
    """The torch device of the GPU path: ``"cuda"``, or ``"cpu"`` under the simulator."""
    return "cpu" if _simulator() else "cuda"


def resolve(device: str, job: str = "training") -> str:
    """``"cpu"`` or ``"cuda"`` for a requested ``auto``/``cpu``/``cuda`` (``InputError`` for a bad name,
    or for ``cuda`` where the GPU path does not work here)."""
    if device not in DEVICES:
        raise InputError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cpu":
        return "cpu"
    ok, why = cuda_status()
    if device == "auto":
        return "cuda" if ok else "cpu"
    if not ok:
        raise InputError(f"device 'cuda' requested for {job} but the GPU path is not available: {why}; "
                         "use --device cpu or auto")
    return "cuda"


def set_decode_device(device: str | None) -> None:
    """Where dense decodes run: ``auto``, ``cpu``, ``cuda`` (None: back to ``VOLMICRO_DECODE_DEVICE``)."""
    global _decode_device
    if device is not None and device not in DEVICES:
        raise InputError(f"decode device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    _decode_device = device


def decode_on_gpu(n_voxels: int) -> bool:
    """Whether a dense decode of ``n_voxels`` output voxels runs on the GPU."""
    want = _decode_device or os.environ.get("VOLMICRO_DECODE_DEVICE", "auto")
    if want == "cpu":
        return False
    if want == "auto":
        return n_voxels >= GPU_DECODE_MIN_VOXELS and cuda_available()
    return resolve(want, "decoding") == "cuda"


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is the GPU running out of memory (torch's or a CUDA driver error)."""
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return "CUDA_ERROR_OUT_OF_MEMORY" in text or "out of memory" in text.lower() and "CUDA" in text


def out_of_memory_error(what: str, shape, advice: str) -> VolmicroError:
    """The error for a GPU out-of-memory while doing ``what`` on a volume/region of ``shape`` (ZYX)."""
    n = 1
    for s in shape:
        n *= int(s)
    free = ""
    try:
        import torch

        free_b, total_b = torch.cuda.mem_get_info()
        free = f" (GPU memory: {free_b / 2**30:.1f} of {total_b / 2**30:.1f} GiB free now)"
    except Exception:  # noqa: BLE001 - the message must come out whatever the driver state
        pass
    dims = " x ".join(str(int(s)) for s in shape)
    return VolmicroError(f"the GPU ran out of memory {what} {dims} voxels ({n / 1e6:.1f} Mvoxel){free}; {advice}")
