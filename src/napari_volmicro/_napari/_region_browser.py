"""Keeps an Image layer showing the decoded part of its model that the view shows.

2D: the visible rectangle of the current slice, at a step matching the zoom
(``visible_region``), shown repeated along the slice axis so the layer keeps
the volume's full extent there (the slider range stays right). 3D: a box (the
whole volume by default) decoded with one stride so it holds at most
``max_voxels_3d`` samples. Decoding runs in a napari thread worker; viewport
events are debounced (the first event after a quiet spell fires at once, so a
single slice step is not delayed); at most one decode runs at a time and a
result whose request is no longer the latest is dropped. All layer changes
happen in the worker's ``returned`` handler, on the main thread.

A many-brick file's lazy model reads, for each decode, only the bricks that
reach the region (recent bricks stay cached); a layer marked for automatic
contrast (its amplitudes were not read) takes its contrast limits from the
first block shown.

Each decode also reports how it differs from the exact decode of the same
region (``GaussianVolume.decode_measured``): free for the default ``knn``
(its kernel knows which voxels it changed), a second, dense decode for the
paper's ``knn-centres``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from ..evaluate import DEFAULT_K
from ..evaluate.base import DecodeLoss
from ..region import RegionGrid, full_grid
from ._layers import AUTO_CONTRAST_KEY, BASE_KEY, MODEL_KEY, contrast_from_block, same_layer
from ._view_region import placement, strided_box, visible_region

#: A plane decode that took at most this long (s) last time runs on the main thread, in the event
#: that changed the view, so napari draws the slice change once, with the decoded plane.
SYNC_DECODE_MAX_S = 0.025

#: What the Browse widget offers, default first: ``knn`` is the exact decode wherever at most K
#: Gaussians reach a voxel (within 0.1 dB of it on the trained models measured, at ``DEFAULT_K``).
EVALUATORS = ("knn", "dense", "knn-centres", "reference")


@dataclass(frozen=True)
class DecodeRequest:
    """One decode: the strided region, how to place it, and with which evaluator."""

    grid: RegionGrid
    broadcast_axis: int | None  # 2D: the slice axis (block repeated along it); 3D: None
    evaluator: str
    k: int


@dataclass(frozen=True)
class DecodeResult:
    request: DecodeRequest
    seconds: float  # decode time in the worker (with the exact decode a knn-centres comparison needs)
    loss: DecodeLoss | None = None  # how the block differs from the exact decode of the region


def decode_block(gv, request: DecodeRequest, done=None) -> tuple[np.ndarray, float, DecodeLoss]:
    """Decode ``request.grid`` (runs in the worker thread). Returns (block, seconds, loss).

    done: optional ``threading.Event`` set when the decode ends (success or not).
    """
    try:
        t0 = time.perf_counter()
        block, loss = gv.decode_measured(request.grid.slices, evaluator=request.evaluator, k=request.k)
        return block, time.perf_counter() - t0, loss
    finally:
        if done is not None:
            done.set()


class RegionBrowser:
    """Decodes, on demand, the region of ``layer``'s model that ``viewer`` shows.

    layer: an Image layer made by ``image_layer_data`` (model and base
    placement in its metadata). on_decoded(result) / on_error(message) are
    called on the main thread. ``close()`` disconnects everything.
    """

    def __init__(
        self,
        viewer,
        layer,
        *,
        evaluator: str = "knn",
        k: int = DEFAULT_K,
        debounce_ms: int = 120,
        max_voxels_3d: int = 4_000_000,
        box: RegionGrid | None = None,
        on_decoded=None,
        on_error=None,
    ):
        from qtpy.QtCore import QTimer

        self.viewer = viewer
        self.layer = layer
        self.gv = layer.metadata[MODEL_KEY]
        self.base_scale, self.base_translate = layer.metadata[BASE_KEY]
        self.evaluator = evaluator
        self.k = int(k)
        self.max_voxels_3d = int(max_voxels_3d)
        self.box = box
        self.on_decoded = on_decoded
        self.on_error = on_error
        self.last: DecodeResult | None = None  # what the layer shows now
        self.requests = 0  # decodes started (for tests and benchmarks)
        self._shown: DecodeRequest | None = None
        self._buffer: np.ndarray | None = None  # the block the layer shows (broadcast in 2D)
        self._buffer_key = None
        self._running: DecodeRequest | None = None
        self._worker = None
        self._done = threading.Event()
        self._pending = False
        self._closed = False
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(int(debounce_ms))
        self._timer.timeout.connect(self._on_quiet)
        self._trailing = False
        self._connections = []
        cam = viewer.scene.camera
        for emitter in (
            cam.events.center,
            cam.events.zoom,
            viewer.dims.events.point,
            viewer.dims.events.ndisplay,
            viewer.dims.events.order,
            viewer.canvas.events.size,
        ):
            # first in line: the decode starts before napari re-slices the old data
            emitter.connect(self.request, position="first")
            self._connections.append(emitter)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        self.request()

    # -- scheduling -------------------------------------------------------------

    def request(self, event=None) -> None:
        """The view changed: decode now if quiet, else once the events stop (debounced)."""
        if self._closed:
            return
        if self._timer.isActive():
            self._trailing = True
            self._timer.start()  # restart: wait for quiet
            return
        self._timer.start()
        self._fire()

    def refresh(self) -> None:
        """Decode again now (evaluator, K or box changed)."""
        self._shown = None
        self._fire()

    def _on_quiet(self):
        if self._trailing:
            self._trailing = False
            self._fire()

    def target(self) -> DecodeRequest | None:
        """The decode the current view needs (None: the view shows none of the volume)."""
        v = self.viewer
        offset = v.dims.ndim - 3
        if offset < 0:
            return None
        if v.dims.ndisplay == 3:
            box = self.box or full_grid(self.gv.shape)
            return DecodeRequest(strided_box(box, self.max_voxels_3d), None, self.evaluator, self.k)
        displayed = tuple(int(a) - offset for a in v.dims.displayed)
        if min(displayed) < 0:
            return None
        (slice_axis,) = {0, 1, 2} - set(displayed)
        grid = visible_region(
            self.gv.shape,
            self.base_scale,
            self.base_translate,
            displayed,
            float(v.dims.point[offset + slice_axis]),
            tuple(float(c) for c in v.scene.camera.center[-2:]),
            float(v.scene.camera.zoom),
            tuple(int(s) for s in v.canvas.size),
        )
        if grid is None:
            return None
        return DecodeRequest(grid, slice_axis, self.evaluator, self.k)

    def _fire(self):
        if self._closed:
            return
        req = self.target()
        if req is None or req == self._shown:
            return
        if self._running is not None:
            self._pending = True
            return
        if self._quick(req):
            # on the main thread, before napari re-slices for this event: the slice change is
            # drawn once, with the decoded plane (a worker's result would need a second redraw)
            self.requests += 1
            try:
                out = decode_block(self.gv, req)
            except Exception as exc:  # as a worker's error would be
                self._on_errored(req, exc)
                return
            self._on_returned(req, out)
            return
        self._start(req)

    def _quick(self, req: DecodeRequest) -> bool:
        """Whether ``req`` is a plane like the last one shown whose decode took at most
        ``SYNC_DECODE_MAX_S``: decoded at once on the main thread instead of in a worker."""
        last = self.last
        return (req.broadcast_axis is not None and last is not None and last.request.broadcast_axis is not None
                and last.request.evaluator == req.evaluator and last.request.k == req.k
                and req.grid.size <= 1.25 * last.request.grid.size and last.seconds <= SYNC_DECODE_MAX_S)

    def _start(self, req: DecodeRequest):
        from napari.qt.threading import create_worker

        self._running = req
        self._pending = False
        self.requests += 1
        self._done = threading.Event()
        worker = create_worker(  # errored handled here, so napari does not also re-raise it
            decode_block, self.gv, req, self._done, _start_thread=False,
            _connect={"errored": lambda exc, req=req: self._on_errored(req, exc)},
        )
        worker.returned.connect(lambda out, req=req: self._on_returned(req, out))
        worker.finished.connect(lambda w=worker: self._on_finished(w))
        self._worker = worker
        worker.start()

    # -- results (main thread) ------------------------------------------------------

    def _on_returned(self, req: DecodeRequest, out):
        if self._closed:
            return
        block, seconds, loss = out
        if req != self.target():  # the view moved on while decoding: stale
            self._pending = True
            return
        self._show(req, block)
        self.last = DecodeResult(req, seconds, loss)
        if self.on_decoded is not None:
            self.on_decoded(self.last)

    def _on_errored(self, req, exc):
        if self._closed:
            return
        self._shown = req  # do not retry the same failing request in a loop
        msg = f"decoding {_describe(req.grid)} with {req.evaluator!r} failed: {exc}"
        if self.on_error is not None:
            self.on_error(msg)
        else:
            from napari.utils.notifications import show_error

            show_error(msg)

    def _on_finished(self, worker):
        if worker is self._worker:
            self._worker = None
        self._running = None
        if self._pending and not self._closed:
            self._pending = False
            self._fire()

    def _show(self, req: DecodeRequest, block: np.ndarray):
        """Put ``block`` on screen with as few layer refreshes as possible.

        Same block shape and placement as shown (a slice change at a fixed view):
        copy into the buffer the layer already shows and refresh once. Otherwise
        swap the data, and touch scale/translate only if they changed (each
        change makes napari re-slice every layer).
        """
        axis = req.broadcast_axis
        scale, translate = placement(req.grid, self.base_scale, self.base_translate, axis)
        layer = self.layer
        key = (block.shape, block.dtype, axis, scale, translate)
        if self._buffer is not None and key == self._buffer_key:
            self._buffer[...] = block
            layer.refresh()
        else:
            self._buffer = np.ascontiguousarray(block)
            self._buffer_key = key
            data = self._buffer
            if axis is not None:
                full = list(block.shape)
                full[axis] = self.gv.shape[axis]
                data = np.broadcast_to(self._buffer, tuple(full))
            if not np.allclose(layer.scale[-3:], scale):
                layer.scale = scale
            if not np.allclose(layer.translate[-3:], translate):
                layer.translate = translate
            layer.data = data
        if layer.metadata.get(AUTO_CONTRAST_KEY):
            # a lazily read model: its amplitudes are unknown, the first block sets the range
            layer.metadata = {k: v for k, v in layer.metadata.items() if k != AUTO_CONTRAST_KEY}
            layer.contrast_limits = contrast_from_block(block)
        self._shown = req

    # -- teardown -------------------------------------------------------------------

    def _on_layer_removed(self, event):
        if same_layer(event.value, self.layer):
            self.close()

    @property
    def busy(self) -> bool:
        return self._running is not None

    def close(self, wait_ms: int = 5000):
        """Disconnect from the viewer; wait (up to ``wait_ms``) for a running decode to end."""
        if self._closed:
            return
        self._closed = True
        self._timer.stop()
        if self._running is not None and wait_ms > 0:
            self._done.wait(wait_ms / 1000.0)  # a plain wait: no event loop runs here
        for emitter in self._connections:
            emitter.disconnect(self.request)
        self._connections.clear()
        self.viewer.layers.events.removed.disconnect(self._on_layer_removed)


#: Below this PSNR against the exact decode (dB) a decode is flagged as showing less than the file
#: holds. Exact decodes of our models score 35-52 dB psnr_full against their originals; a difference
#: 60 dB below the peak adds at most a few hundredths of a dB of loss to the 35-45 dB ones.
LOSS_WARN_DB = 60.0


def describe_loss(request: DecodeRequest, loss: DecodeLoss | None) -> tuple[str, bool]:
    """One sentence on how a decode differs from the exact decode of its region, and whether it
    shows less than the file holds (PSNR against the exact decode below ``LOSS_WARN_DB``)."""
    if loss is None or request.evaluator not in ("knn", "knn-centres"):
        return "", False
    k = request.k
    rule = f"K={k}" if request.evaluator == "knn" else f"the paper's rule (K={k} nearest centres)"
    if loss.exact:
        if request.evaluator == "knn":
            return f"exact here: no voxel is reached by more than K={k} Gaussians", False
        return f"{rule} equals the exact decode here", False
    share = 100.0 * loss.changed / max(loss.voxels, 1)
    text = (f"{rule} differs from the exact decode at {loss.changed:,} voxels ({share:.2g}%): "
            f"{loss.psnr:.1f} dB PSNR against it, max error {loss.max_abs:.3g}")
    warn = loss.psnr < LOSS_WARN_DB
    if warn:
        text += " - this shows less than the file holds; " + (
            "raise K or choose dense" if request.evaluator == "knn" else "choose knn or dense")
    return text, warn


def _describe(grid: RegionGrid) -> str:
    parts = []
    for axis, a, b, s in zip("ZYX", grid.start, grid.stop, grid.step):
        parts.append(f"{axis} {a}:{b}" + (f":{s}" if s != 1 else ""))
    return ", ".join(parts)


describe_region = _describe
