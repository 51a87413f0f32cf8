"""What the Compress widget's worker runs: the Trainer, throttled for a GUI (no Qt here).

``training_updates`` drives ``Trainer.run()`` and yields an ``Update`` at most
every ``throttle_s`` seconds (plus every snapshot that carries a model, and the
last one), asking the trainer for a model copy every ``snapshot_every_s`` so
the GUI can show a live reconstruction. It returns a ``Result`` with the final
model, its reconstruction (of the model as the file stores it) and the quality
summary. Everything heavy (training, decoding, metrics) happens in the worker.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..features import feature_table


@dataclass
class Update:
    step: int
    total_steps: int
    loss: float
    psnr: float
    n_gaussians: int
    elapsed: float
    eta: float | None
    history: list = field(default_factory=list)  # (step, loss, psnr) since the last update
    model: object = None  # GaussianVolume snapshot, when one arrived
    recon: np.ndarray | None = None  # its decoded volume (original units), with model
    recon_step: tuple[int, int, int] = (1, 1, 1)  # stride of recon along ZYX
    features: dict | None = None  # feature_table(model), computed here rather than in the GUI
    done: bool = False
    stopped: bool = False


@dataclass
class Result:
    model: object  # the final GaussianVolume
    recon: np.ndarray | None  # the stored (quantized) model decoded, original units
    recon_step: tuple[int, int, int]
    summary: dict  # bpp, ratio, psnr_full, psnr_fg, ssim3d, file_bytes, n_gaussians, seconds
    stopped: bool
    features: dict | None = None  # feature_table(model)


def dense_evaluator_name() -> str:
    """``"dense"`` when that evaluator is installed, else ``"reference"``."""
    from importlib.util import find_spec

    return "dense" if find_spec("napari_volmicro.evaluate.dense") is not None else "reference"


#: Live reconstructions are decoded strided to at most this many voxels.
PREVIEW_VOXELS = 16_000_000


def preview_shape(shape, max_voxels: int = PREVIEW_VOXELS) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(shape, stride) of the preview decode of a volume of ``shape`` voxels (ZYX)."""
    step = preview_step(shape, max_voxels)
    return tuple(-(-int(n) // s) for n, s in zip(shape, step)), step


def preview_step(shape, max_voxels: int) -> tuple[int, int, int]:
    """A stride (1 in Z unless needed) that keeps a preview decode under ``max_voxels``."""
    z, y, x = shape
    s = 1
    while z * ((y + s - 1) // s) * ((x + s - 1) // s) > max_voxels and s < max(y, x):
        s += 1
    sz = 1
    while ((z + sz - 1) // sz) * ((y + s - 1) // s) * ((x + s - 1) // s) > max_voxels and sz < z:
        sz += 1
    return (sz, s, s)


def decode_preview(gv, max_voxels: int, evaluator: str | None = None):
    """Decode ``gv`` whole, strided to at most ``max_voxels`` samples. Returns (array, step)."""
    step = preview_step(gv.shape, max_voxels)
    region = tuple(slice(None, None, s) for s in step)
    return gv.decode(region, evaluator=evaluator or dense_evaluator_name()), step


class SwitchIntervalHold:
    """Python's thread switch interval, lowered while at least one holder needs it (main thread only).

    A thread that gives up the global lock (a large numpy call, a Qt paint)
    waits up to the switch interval (5 ms by default) to get it back while
    another thread runs Python, so a GUI handler that does so a few times while
    a training thread runs can take 2-3x its own time (``benchmarks/gui.py
    --switch-interval``, two runs each, both windows: the longest
    reconstruction update 7-33 ms with 5 ms, 7-10 ms with 1 ms). The
    interval is process-wide, so it is lowered only while a training runs and
    put back when the last holder releases it (unless someone else changed it
    meanwhile).
    """

    def __init__(self, seconds: float = 0.001):
        self.seconds = float(seconds)
        self.holders = 0
        self._saved: float | None = None

    def acquire(self) -> None:
        if self.holders == 0:
            self._saved = sys.getswitchinterval()
            if self.seconds < self._saved:
                sys.setswitchinterval(self.seconds)
        self.holders += 1

    def release(self) -> None:
        if self.holders == 0:
            return
        self.holders -= 1
        if self.holders == 0 and self._saved is not None:
            if abs(sys.getswitchinterval() - min(self.seconds, self._saved)) < 1e-7:
                sys.setswitchinterval(self._saved)
            self._saved = None


#: The one hold training widgets share.
TRAINING_SWITCH_INTERVAL = SwitchIntervalHold()


def lower_thread_priority(nice: int = 10) -> bool:
    """Let the calling thread yield the CPU to the GUI: set its nice value to ``nice`` (Linux).

    On Linux priorities are per thread, and threads started later by this one
    (numba's and torch's OpenMP pools) inherit it, so the training threads give
    way to napari's main thread and to Mesa's software rasteriser when the
    machine has no cores to spare; on an idle machine the training runs as
    fast as before. Unprivileged processes cannot raise a
    priority again, so a pooled thread keeps the lower one for later (background)
    jobs. Elsewhere, or if refused, nothing happens. Returns whether it was set.
    """
    if not sys.platform.startswith("linux") or nice <= 0:
        return False
    try:
        tid = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, tid) >= nice:
            return True
        os.setpriority(os.PRIO_PROCESS, tid, min(int(nice), 19))
        return True
    except OSError:
        return False


def training_updates(
    trainer,
    volume: np.ndarray,
    *,
    throttle_s: float = 0.3,
    snapshot_every_s: float = 3.0,
    preview_voxels: int = PREVIEW_VOXELS,
    summary: bool = True,
    cancel=None,
    finished=None,
    nice: int | None = None,
):
    """Generator of ``Update``s for a GUI; returns a ``Result`` (see module docstring).

    volume: the array the trainer was built from (for the final metrics).
    cancel: optional ``threading.Event``; when set (call ``trainer.stop()`` too), the
    loop ends after the trainer's last snapshot without decoding or scoring, and
    returns None. finished: optional ``threading.Event`` set when this generator
    ends for any reason, so a closing GUI can wait for the thread without an event loop.
    nice: lower the running thread's priority to this nice value first (``lower_thread_priority``).
    """
    if nice is not None:
        lower_thread_priority(nice)
    try:
        result = yield from _updates(trainer, volume, throttle_s, snapshot_every_s, preview_voxels, summary, cancel)
    finally:
        if finished is not None:
            finished.set()
    return result


def _updates(trainer, volume, throttle_s, snapshot_every_s, preview_voxels, summary, cancel):
    t0 = time.monotonic()
    last_yield = -1e9
    last_request = -1e9  # ask for a model at once, so the live layers show the initialisation
    history = []
    snap = None
    for snap in trainer.run():
        if cancel is not None and cancel.is_set():
            continue  # let the trainer wind down (it was told to stop); show nothing more
        history.append((snap.step, snap.loss, snap.psnr))
        now = time.monotonic()
        if not snap.done and now - last_request >= snapshot_every_s:
            trainer.request_model()
            last_request = now
        if snap.done or snap.model is not None or now - last_yield >= throttle_s:
            upd = Update(
                snap.step, snap.total_steps, snap.loss, snap.psnr, snap.n_gaussians,
                snap.elapsed, snap.eta, history, done=snap.done, stopped=snap.stopped,
            )
            history = []
            if snap.model is not None and not snap.done:
                upd.model = snap.model
                upd.recon, upd.recon_step = decode_preview(snap.model, preview_voxels)
                upd.features = feature_table(snap.model)
            yield upd
            last_yield = time.monotonic()
    if cancel is not None and cancel.is_set():
        return None
    model = trainer.result if trainer.result is not None else (snap.model if snap is not None else None)
    if model is None:
        raise RuntimeError("the trainer finished without a model")
    stopped = bool(snap is not None and snap.stopped)
    seconds = time.monotonic() - t0
    out = {"n_gaussians": model.n_gaussians, "seconds": seconds}
    recon, step = None, (1, 1, 1)
    if summary:
        from ..container import file_size, quantize
        from ..metrics import quality_report

        stored = quantize(model)
        recon, step = decode_preview(stored, preview_voxels)
        if step == (1, 1, 1):
            out.update(quality_report(volume, recon, file_size(model)))
        else:  # too big to score whole: score the strided preview against the same samples
            out.update(quality_report(volume[:: step[0], :: step[1], :: step[2]], recon, None))
            nbytes = file_size(model)
            out.update(
                file_bytes=nbytes, bpp=8.0 * nbytes / volume.size, ratio=volume.nbytes / nbytes
            )
    return Result(model, recon, step, out, stopped, feature_table(model))
