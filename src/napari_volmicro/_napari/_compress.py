"""Compress dock widget: train Gaussians on a 3D image layer, live.

A thin view over ``napari_volmicro.encode.Trainer``: the training loop runs in
a napari generator worker (``training_updates``), and this widget only turns
its updates into a progress bar, a plot, a live reconstruction Image layer and
a Points layer of centres, all on the main thread. Stop ends training after
the current step (the trainer keeps the current model); Save writes the model
to ``.vmg`` atomically. The worker is stopped when the source layer is
deleted and when the viewer window closes.
"""

from __future__ import annotations

import threading

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
)

from ..errors import VolmicroError
from ._layers import points_layer_data, same_layer, set_points_data, update_points_layer
from ._plot import LossPlot
from ._qt_utils import warm_text_glyphs, watch_window_close
from ._source_dock import RECON_KEY, SourceLayerDock, fmt_seconds

BUDGETS = {  # label -> (Trainer keyword, default, min, max, decimals)
    "bits per voxel": ("bpp", 0.073, 0.001, 32.0, 3),
    "ratio": ("ratio", 400.0, 1.0, 1e6, 1),
    "Gaussians": ("gaussians", 2000, 1, 10_000_000, 0),
}
DEVICES = ("auto", "cpu", "cuda")


_warm_thread: threading.Thread | None = None


def warm_up_in_background() -> threading.Thread:
    """Load torch and the training kernels in a daemon thread, once per process.

    Importing torch holds the GIL for up to ~0.3-1.5 s on this CPU (its shared
    libraries load); doing it when the widget opens keeps that pause out of a run.
    """
    global _warm_thread
    if _warm_thread is None:
        from ..encode import warm_up

        def run():
            try:
                import pandas  # noqa: F401  (napari builds Points features with it: ~1 s on first use)

                warm_up()
            except Exception:  # noqa: BLE001 - a failed warm-up only means a slower first Start
                pass

        _warm_thread = threading.Thread(target=run, name="volmicro-warm-up", daemon=True)
        _warm_thread.start()
    return _warm_thread


class CompressWidget(SourceLayerDock):
    """Pick a 3D image layer and a size budget, train, watch, stop, save."""

    #: progress/plot updates reach the GUI at most this often (seconds)
    throttle_s = 0.3
    #: a live reconstruction is requested this often (seconds)
    snapshot_every_s = 3.0
    #: the training thread's nice value (Linux): below the GUI's, so redraws are not starved
    training_nice = 10
    #: the Points layer follows a new reconstruction this much later (ms), after its redraw
    points_delay_ms = 150
    #: live reconstructions up to this size are copied into the layer's array (~3 ms per 16 MB)
    recon_copy_max_bytes = 16 * 2**20

    def __init__(self, napari_viewer, parent=None):
        super().__init__(napari_viewer, "%v / %m steps", parent)
        self._worker_started = False
        self._holds_switch_interval = False
        self.trainer = None
        self.model = None  # the latest GaussianVolume (snapshot or final)
        self.result = None  # the final Result
        self.source = None  # the layer being compressed
        self.recon_layer = None
        self.points_layer = None
        self._placement = None
        self._close_watcher = None
        self._pending_points = None
        self._pending_features = None
        self._recon_buffer = None  # the reconstruction layer's array, once it holds one of ours
        self._cancel = threading.Event()
        self.thread_done = threading.Event()
        self.trainer_factory = None  # tests may substitute; default napari_volmicro.encode.Trainer

        self.budget_kind = QComboBox()
        self.budget_kind.addItems(BUDGETS)
        self.budget_value = QDoubleSpinBox()
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.save_button = QPushButton("Save .vmg...")
        self.eta_label = QLabel("")
        self.eta_label.setWordWrap(True)  # a longer line must not widen the dock (and resize the canvas)
        self.plot = LossPlot()

        form = QFormLayout()
        form.addRow("Image layer", self.layer_combo)
        form.addRow(self.layer_note)
        budget_row = QHBoxLayout()
        budget_row.addWidget(self.budget_kind)
        budget_row.addWidget(self.budget_value)
        form.addRow("Budget", budget_row)
        form.addRow("Preset", self.preset_combo)
        form.addRow("Steps", self.steps_spin)
        form.addRow("Seed", self.seed_spin)
        form.addRow("Device", self.device_combo)
        self.lay_out(form, (self.start_button, self.stop_button, self.save_button), self.eta_label, self.plot)

        self.budget_kind.currentTextChanged.connect(self._on_budget_kind)
        self.save_button.clicked.connect(self._save_dialog)
        self._on_budget_kind(self.budget_kind.currentText())
        self.follow_layers()
        self._set_running(False)
        warm_up_in_background()
        warm_text_glyphs(self.viewer)

    # -- inputs -------------------------------------------------------------------

    def _on_budget_kind(self, label):
        _, default, lo, hi, decimals = BUDGETS[label]
        self.budget_value.setDecimals(decimals)
        self.budget_value.setRange(lo, hi)
        self.budget_value.setValue(default)

    def budget(self) -> dict:
        key = BUDGETS[self.budget_kind.currentText()][0]
        value = self.budget_value.value()
        return {key: int(value) if key == "gaussians" else float(value)}

    # -- run ----------------------------------------------------------------------------

    def start(self):
        """Start training on the selected layer (does nothing if already running)."""
        from napari.qt.threading import create_worker
        from napari.utils.notifications import show_error

        from ._training_loop import training_updates

        layer = self._layer_to_start("training is already running; Stop it first")
        if layer is None:
            return
        volume = np.asarray(layer.data)
        factory = self.trainer_factory
        if factory is None:
            from ..encode import Trainer as factory
        steps = self.steps_spin.value() or None
        try:
            trainer = factory(
                volume,
                spacing=tuple(float(s) for s in layer.scale[-3:]),
                preset=self.preset_combo.currentText(),
                steps=steps,
                seed=self.seed_spin.value(),
                device=self.device_combo.currentText(),
                **self.budget(),
            )
        except VolmicroError as exc:
            show_error(f"cannot compress '{layer.name}': {exc}")
            return
        self.trainer, self.source, self.model, self.result = trainer, layer, None, None
        self._placement = (tuple(layer.scale[-3:]), tuple(layer.translate[-3:]))
        self._contrast = tuple(layer.contrast_limits)
        self._make_output_layers(volume)
        self.plot.clear()
        self.summary_label.setText("")
        self.progress.setRange(0, max(1, int(trainer.total_steps)))
        self._set_progress(0)
        self._cancel = threading.Event()
        self.thread_done = threading.Event()  # set by the worker thread when training ends
        worker = create_worker(
            training_updates,
            trainer,
            volume,
            throttle_s=self.throttle_s,
            snapshot_every_s=self.snapshot_every_s,
            cancel=self._cancel,
            finished=self.thread_done,
            nice=self.training_nice,
            _start_thread=False,
            _connect={"errored": self._on_error},  # handled here, so napari does not also re-raise it
        )
        worker.yielded.connect(self._on_update)
        worker.returned.connect(self._on_result)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self._worker_started = False
        self._watch_window()
        self._set_running(True)
        if self._layers_ready():
            self._start_worker()
        else:  # _add_points_layer starts it once the new layers are on screen
            self.eta_label.setText("adding the output layers...")

    def stop(self):
        """End training after the current step; the current model is kept (and summarised)."""
        if self.trainer is not None and self.worker is not None:
            self.trainer.stop()
            self.eta_label.setText("stopping after the current step...")

    def abort(self, wait_ms: int = 10_000) -> bool:
        """Stop training, skip the summary, and block (up to ``wait_ms``) until the thread is done.

        Used when the viewer closes: no event loop runs while waiting. Returns
        True if the training thread ended in time.
        """
        if self.worker is None:
            return True
        self._cancel.set()
        if self.trainer is not None:
            self.trainer.stop()
        if not self._worker_started:  # still setting up the layers: no thread to wait for
            self._on_finished()
            return True
        done = self.thread_done.wait(wait_ms / 1000.0)
        self._hold_switch_interval(False)  # the finished signal may never be delivered now
        return done

    def _set_running(self, running: bool):
        super()._set_running(running)
        self.save_button.setEnabled(not running and self.model is not None)

    # -- updates (main thread) ------------------------------------------------------------

    def _on_update(self, upd):
        self.progress.setMaximum(max(1, int(upd.total_steps)))
        self._set_progress(int(upd.step))
        eta = "" if upd.eta is None else f", about {fmt_seconds(upd.eta)} left"
        self.eta_label.setText(
            f"step {upd.step}/{upd.total_steps}, {upd.n_gaussians:,} Gaussians, "
            f"PSNR {upd.psnr:.1f} dB, {fmt_seconds(upd.elapsed)} elapsed{eta}"
        )
        self.plot.extend(upd.history)
        if upd.model is not None:
            self.model = upd.model
            self._show_model(upd.model, upd.recon, upd.recon_step, upd.features)

    def _on_result(self, result):
        if result is None:  # cancelled (viewer closing)
            return
        self.result = result
        self.model = result.model
        self._show_model(result.model, result.recon, result.recon_step, result.features)
        s = result.summary
        parts = [f"{s['n_gaussians']:,} Gaussians", f"{fmt_seconds(s['seconds'])}"]
        if "bpp" in s:
            parts += [f"{s['bpp']:.3f} bpp", f"ratio {s['ratio']:.0f}:1"]
        if "psnr_full" in s:
            parts += [f"PSNR {s['psnr_full']:.2f} dB (foreground {s['psnr_fg']:.2f})", f"SSIM {s['ssim3d']:.4f}"]
        head = "stopped early" if result.stopped else "done"
        self.summary_label.setText(f"{head}: " + ", ".join(parts))
        self._set_progress(self.progress.maximum() if not result.stopped else self.progress.value())
        self.eta_label.setText("")

    def _on_error(self, exc):
        from napari.utils.notifications import show_error

        show_error(f"training failed: {exc}")
        self.eta_label.setText(f"training failed: {exc}")

    def _on_finished(self):
        self._hold_switch_interval(False)
        self.worker = None
        self.trainer = None
        self._set_running(False)

    def _make_output_layers(self, volume):
        """Add (or reuse) the reconstruction and Gaussians layers, empty, when Start is clicked.

        Creating them up front keeps napari's one-off layer set-up cost (GL
        programs, textures) out of the training run; updates then only swap data.
        The reconstruction carries RECON_KEY (not the model key), so the Browse
        widget leaves it alone.
        """
        from ..gaussians import GaussianVolume

        scale, translate = self._placement
        name = self.source.name
        empty = GaussianVolume.empty(volume.shape, spacing=scale)
        if self.recon_layer is None or self.recon_layer not in self.viewer.layers:
            contrast = self._contrast if self._contrast[1] > self._contrast[0] else (0.0, 1.0)
            data, rscale = self._empty_recon(volume)
            self.recon_layer = self.viewer.add_image(
                data,
                name=f"{name} reconstruction",
                scale=rscale,
                translate=translate,
                contrast_limits=contrast,
                colormap="gray",
                metadata={RECON_KEY: True},
            )
        if self.points_layer is None or self.points_layer not in self.viewer.layers:
            # on the next event-loop turn: each napari layer costs a few hundred ms to set up
            from qtpy.QtCore import QTimer

            self.points_layer = None
            data, kwargs, _ = points_layer_data(empty, f"{name} Gaussians", scale, translate)
            QTimer.singleShot(0, lambda: self._add_points_layer(data, kwargs))

    def _empty_recon(self, volume) -> tuple[np.ndarray, tuple[float, ...]]:
        """(data, scale) of a new reconstruction layer, before the first model arrives.

        When the live reconstructions will be small enough to copy, this is the
        array they are copied into (zeros, of the preview's shape and the
        volume's dtype, at the preview's voxel size): the first update then only
        re-slices, like every later one (replacing the data costs napari ~25-45
        ms more with this window). Otherwise a zero-memory placeholder.
        """
        from ._training_loop import preview_shape

        scale = self._placement[0]
        shape, step = preview_shape(volume.shape)
        if int(np.prod(shape)) * volume.dtype.itemsize <= self.recon_copy_max_bytes:
            # written now (np.full, not np.zeros): the first write to fresh pages cost up to
            # 40 ms on this VM, which would otherwise fall in the first live update
            self._recon_buffer = np.full(shape, 0, volume.dtype)
            return self._recon_buffer, tuple(float(s) * st for s, st in zip(scale, step))
        self._recon_buffer = None
        return np.broadcast_to(np.zeros((1, 1, 1), volume.dtype), volume.shape), scale

    def _add_points_layer(self, data, kwargs):
        """Add the Gaussians layer, then start training ``points_delay_ms`` later.

        The first draw of a canvas's first Points layer is napari's slowest
        (shader set-up: ~100-200 ms with software OpenGL); letting it happen
        before training starts keeps set-up and training pauses apart.
        """
        from qtpy.QtCore import QTimer

        if self.worker is None:  # aborted in between (the viewer is closing)
            return
        try:
            if self.points_layer is None and self.source is not None:
                self.points_layer = self.viewer.add_points(data, **kwargs)
                self._show_points()
        except RuntimeError:  # the widget or viewer was closed in between
            return
        QTimer.singleShot(self.points_delay_ms, self._start_worker)

    def _layers_ready(self) -> bool:
        layer = self.points_layer
        return layer is not None and layer in self.viewer.layers

    def _start_worker(self):
        """Start the training thread created by ``start`` (once), with a short switch interval while it runs."""
        if self.worker is not None and not self._worker_started:
            self._worker_started = True
            self._hold_switch_interval(True)
            self.worker.start()

    def _hold_switch_interval(self, hold: bool):
        from ._training_loop import TRAINING_SWITCH_INTERVAL

        if hold and not self._holds_switch_interval:
            TRAINING_SWITCH_INTERVAL.acquire()
        elif not hold and self._holds_switch_interval:
            TRAINING_SWITCH_INTERVAL.release()
        self._holds_switch_interval = hold

    def _show_model(self, gv, recon, step, features=None):
        """Show a model: the reconstruction now, the points ``points_delay_ms`` later.

        Each update costs napari a redraw (~40-60 ms with software OpenGL);
        apart, each pause stays short where together they would add up. The
        feature table was computed in the worker.
        """
        from qtpy.QtCore import QTimer

        if recon is None:
            return
        scale, translate = self._placement
        rscale = tuple(float(s) * st for s, st in zip(scale, step))
        layer = self.recon_layer
        if layer is not None and layer in self.viewer.layers:
            if not np.allclose(layer.scale, rscale):
                layer.scale = rscale
            self._set_recon_data(layer, recon)
        self._pending_points = (gv, features)
        QTimer.singleShot(self.points_delay_ms, self._show_points)

    def _set_recon_data(self, layer, recon):
        """Show ``recon`` on the reconstruction layer.

        Up to ``recon_copy_max_bytes`` (~3 ms to copy per 16 MB), it is copied into
        the layer's own array when that has the same shape and dtype: napari then
        only re-slices (~7 instead of ~15 ms: no dims or layer-list update). Larger
        ones are handed over as they are (a copy would cost more than it saves).
        """
        small = recon.nbytes <= self.recon_copy_max_bytes
        buffer = layer.data
        if small and buffer is self._recon_buffer and buffer.shape == recon.shape and buffer.dtype == recon.dtype:
            np.copyto(buffer, recon)
            layer.refresh()
        else:
            self._recon_buffer = np.array(recon, copy=True) if small else None
            layer.data = recon if self._recon_buffer is None else self._recon_buffer

    def _show_points(self):
        """Move the pending model's centres now; its sizes, colours and features ``points_delay_ms`` later.

        Each half costs napari ~20-40 ms and a redraw; apart, neither pause is long.
        """
        from qtpy.QtCore import QTimer

        layer = self.points_layer
        if self._pending_points is None or layer is None or layer not in self.viewer.layers:
            return  # (a layer still being added picks the pending model up)
        gv, features = self._pending_points
        self._pending_points = None
        set_points_data(layer, gv.centers.astype(np.float64))
        self._pending_features = (gv, features)  # replaces an older model's: always the shown centres' model
        QTimer.singleShot(self.points_delay_ms, self._show_features)

    def _show_features(self):
        pending, self._pending_features = self._pending_features, None
        layer = self.points_layer
        if pending is None or layer is None or layer not in self.viewer.layers:
            return
        gv, features = pending
        update_points_layer(layer, gv, features=features, data=False)

    # -- lifecycle --------------------------------------------------------------------------

    def _on_layer_removed(self, event):
        removed = event.value
        if self.source is not None and same_layer(removed, self.source) and self.worker is not None:
            from napari.utils.notifications import show_info

            show_info(f"'{removed.name}' was removed: training stops after this step")
            self.stop()
        self._refill_layers()

    def _watch_window(self):
        if self._close_watcher is None:
            self._close_watcher = watch_window_close(self, self.abort)

    def closeEvent(self, event):
        self.abort()
        super().closeEvent(event)

    # -- save ---------------------------------------------------------------------------------

    def _save_dialog(self):
        path, _ = QFileDialog.getSaveFileName(self, "Save Gaussians", "", "VolMicro (*.vmg)")
        if path:
            self.save(path)

    def save(self, path) -> str | None:
        """Write the current model to ``path`` (``.vmg`` appended if missing), atomically."""
        from napari.utils.notifications import show_error, show_info

        from ..container import save

        if self.model is None:
            show_error("nothing to save yet: train first")
            return None
        if not str(path).lower().endswith(".vmg"):
            path = f"{path}.vmg"
        try:
            out = save(self.model, path)
        except (VolmicroError, OSError) as exc:
            show_error(f"could not save {path}: {exc}")
            return None
        show_info(f"saved {self.model.n_gaussians:,} Gaussians to {out}")
        return str(out)
