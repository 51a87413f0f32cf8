"""Compress large volume dock widget: brick-by-brick encoding on dask.distributed.

A thin view over ``napari_volmicro.bricks.compress_bricked``: the run (and
the connection to the cluster) happens in a napari generator worker
(``_bricked_loop.bricked_updates``); this widget only shows its per-brick
progress and, at the end, opens the written ``.vmg`` through the plugin's
reader (as File > Open does: an image layer the Browse widget decodes on
demand). Stop lets the bricks in flight finish and keeps every finished brick
in ``OUT.vmg.parts``; Start with "resume" continues from them. Closing the
viewer stops the run the same way and waits (bounded) for the worker.

The layer's data may be a numpy or dask array (e.g. from napari-ome-zarr); a
multiscale layer is encoded from its full-resolution level.
"""

from __future__ import annotations

import threading
from pathlib import Path

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ..errors import VolmicroError
from ._qt_utils import watch_window_close
from ._source_dock import SourceLayerDock, check_source_layer, fmt_seconds

CLUSTERS = ("local", "scheduler address")


def check_bricked_layer(layer) -> str | None:
    """Why ``layer`` cannot be compressed in bricks (a message), or None if it can.

    As the Compress widget, except that a multiscale layer is accepted (its level 0 is encoded).
    """
    if layer is not None and getattr(layer, "multiscale", False) and layer.ndim == 3 and not layer.rgb:
        from napari.layers import Image

        if isinstance(layer, Image):
            return None if min(layer.data[0].shape) >= 8 else (
                f"'{layer.name}' has shape {tuple(layer.data[0].shape)}; each axis needs at least 8 voxels")
    return check_source_layer(layer)


def layer_volume(layer):
    """The array to encode: the layer's data, or its full-resolution level when multiscale."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def encode_source(layer):
    """What ``compress_bricked`` reads for ``layer``: the file the layer was opened from when
    ``open_input`` reads it with the same shape and dtype (each worker then reads only its own
    brick), else the layer's array (a numpy array is sent to every worker; a dask array is
    read by its graph)."""
    import numpy as np

    data = layer_volume(layer)
    path = getattr(getattr(layer, "source", None), "path", None)
    if path and isinstance(data, np.ndarray):
        from ..bricks import open_input

        try:
            vol = open_input(path)
        except (VolmicroError, OSError, ValueError, TypeError):
            return data
        if vol.shape == tuple(data.shape) and vol.dtype == data.dtype:
            return str(path)
    return data


class BrickedCompressWidget(SourceLayerDock):
    """Pick a 3D image layer, a budget, bricks and a cluster; compress to a bricked ``.vmg``."""

    #: seconds a scheduler address may take to answer
    connect_timeout_s = 10.0
    #: local clusters run their workers in processes (tests set False: threads in this process)
    local_processes = True
    #: milliseconds ``abort`` (viewer closing) waits for the run to wind down
    abort_wait_ms = 10_000

    def __init__(self, napari_viewer, parent=None):
        super().__init__(napari_viewer, "%v / %m bricks", parent)
        self.report = None  # the last run's report (compress_bricked)
        self.output_layers = []  # layers the reader added for the last file
        self.extra_options = {}  # more encoder options (tests: gate=False)
        self._stop = threading.Event()
        self._cancel = threading.Event()
        self.thread_done = threading.Event()
        self._close_watcher = None

        self.bpp_spin = QDoubleSpinBox()
        self.bpp_spin.setDecimals(3)
        self.bpp_spin.setRange(0.001, 32.0)
        self.bpp_spin.setSingleStep(0.01)
        self.bpp_spin.setValue(0.073)
        self.bpp_spin.setSuffix(" bpp")
        self.brick_spin = QSpinBox()
        self.brick_spin.setRange(8, 4096)
        self.brick_spin.setValue(256)
        self.brick_spin.setSuffix(" voxels")
        self.halo_spin = QSpinBox()
        self.halo_spin.setRange(0, 256)
        self.halo_spin.setValue(16)
        self.halo_spin.setSuffix(" voxels")
        self.cluster_combo = QComboBox()
        self.cluster_combo.addItems(CLUSTERS)
        self.workers_spin = QSpinBox()
        self.workers_spin.setRange(1, 256)
        self.workers_spin.setValue(2)
        self.memory_edit = QLineEdit("2GB")
        self.memory_edit.setToolTip("memory limit per worker, e.g. 2GB or 512MiB")
        self.address_edit = QLineEdit()
        self.address_edit.setPlaceholderText("tcp://host:8786")
        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText("output .vmg file")
        self.browse_button = QPushButton("...")
        self.resume_check = QCheckBox("resume from the bricks a stopped run kept")
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Image layer", self.layer_combo)
        form.addRow(self.layer_note)
        form.addRow("Budget", self.bpp_spin)
        form.addRow("Brick size", self.brick_spin)
        form.addRow("Halo", self.halo_spin)
        form.addRow("Preset", self.preset_combo)
        form.addRow("Steps per brick", self.steps_spin)
        form.addRow("Cluster", self.cluster_combo)
        self._local_row = QWidget()
        local = QHBoxLayout(self._local_row)
        local.setContentsMargins(0, 0, 0, 0)
        local.addWidget(QLabel("workers"))
        local.addWidget(self.workers_spin)
        local.addWidget(QLabel("memory each"))
        local.addWidget(self.memory_edit)
        form.addRow(self._local_row)
        form.addRow(self.address_edit)
        out_row = QHBoxLayout()
        out_row.addWidget(self.output_edit)
        out_row.addWidget(self.browse_button)
        form.addRow("Output", out_row)
        form.addRow(self.resume_check)
        self.lay_out(form, (self.start_button, self.stop_button), self.status_label)

        self.cluster_combo.currentTextChanged.connect(self._on_cluster_kind)
        self.browse_button.clicked.connect(self._output_dialog)
        self._on_cluster_kind(self.cluster_combo.currentText())
        self.follow_layers()
        self._set_running(False)

    # -- inputs -------------------------------------------------------------------

    def _on_cluster_kind(self, kind):
        local = kind == "local"
        self._local_row.setVisible(local)
        self.address_edit.setVisible(not local)

    def check_layer(self, layer) -> str | None:
        return check_bricked_layer(layer)

    def _on_layer_choice(self, *_) -> str | None:
        problem = super()._on_layer_choice()
        layer = self.selected_layer()
        if problem is None and not self.output_edit.text():
            path = getattr(getattr(layer, "source", None), "path", None)
            if path:  # next to the file the layer came from
                p = Path(path)
                self.output_edit.setText(str(p.with_name(p.name.split(".")[0] + ".vmg")))
        return problem

    def _output_dialog(self):
        path, _ = QFileDialog.getSaveFileName(self, "Write bricked Gaussians", self.output_edit.text(),
                                              "VolMicro (*.vmg)")
        if path:
            self.output_edit.setText(path)

    def output_path(self) -> str:
        text = self.output_edit.text().strip()
        if text and not text.lower().endswith(".vmg"):
            text += ".vmg"
        return text

    def cluster_options(self) -> dict:
        """``compress_bricked`` keywords for the chosen cluster."""
        if self.cluster_combo.currentText() == "local":
            return {"workers": self.workers_spin.value(), "memory_limit": self.memory_edit.text().strip(),
                    "processes": bool(self.local_processes)}
        return {"scheduler": self.address_edit.text().strip(), "timeout": float(self.connect_timeout_s)}

    # -- run ----------------------------------------------------------------------------

    def start(self):
        """Start the bricked encode of the selected layer (does nothing if already running)."""
        from napari.qt.threading import create_worker
        from napari.utils.notifications import show_error, show_info

        from ._bricked_loop import bricked_updates

        layer = self._layer_to_start("a bricked encode is already running; Stop it first")
        if layer is None:
            return
        output = self.output_path()
        if not output:
            show_error("choose an output .vmg file")
            return
        cluster = self.cluster_options()
        if "scheduler" in cluster and not cluster["scheduler"]:
            show_error("enter the scheduler address of a running dask cluster (e.g. tcp://host:8786)")
            return
        resume = self.resume_check.isChecked()
        if not resume and Path(output + ".parts").exists():
            show_info(f"{Path(output).name}: starting over; the bricks staged by an earlier run are discarded")
        self.report = None
        self.summary_label.setText("")
        self.status_label.setText("connecting to the cluster...")
        self.progress.setRange(0, 0)  # busy until the brick count is known
        self._stop = threading.Event()
        self._cancel = threading.Event()
        self.thread_done = threading.Event()
        worker = create_worker(
            bricked_updates,
            encode_source(layer),
            output,
            stop=self._stop,
            cancel=self._cancel,
            finished=self.thread_done,
            brick=self.brick_spin.value(),
            halo=self.halo_spin.value(),
            spacing=tuple(float(s) for s in layer.scale[-3:]),
            bpp=float(self.bpp_spin.value()),
            preset=self.preset_combo.currentText(),
            steps=self.steps_spin.value() or None,
            resume=resume,
            **cluster,
            **self.extra_options,
            _start_thread=False,
            # handlers given here, so the worker does not also re-raise its error in the event loop
            _connect={"yielded": self._on_update, "returned": self._on_result, "errored": self._on_error,
                      "finished": self._on_finished},
        )
        self.worker = worker
        self._source_name = layer.name
        self._watch_window()
        self._set_running(True)
        worker.start()

    def stop(self):
        """No new brick starts; the bricks in flight finish and stay staged for a resumed run."""
        if self.worker is not None:
            self._stop.set()
            self.status_label.setText("stopping after the bricks in flight...")

    def abort(self, wait_ms: int | None = None) -> bool:
        """Stop, show nothing more, and block (up to ``wait_ms``) until the run has wound down.

        Used when the viewer closes: no event loop runs while waiting. Returns True if the
        worker ended in time (a brick in flight on a slow cluster may take longer).
        """
        if self.worker is None:
            return True
        self._cancel.set()
        self._stop.set()
        return self.thread_done.wait((self.abort_wait_ms if wait_ms is None else wait_ms) / 1000.0)

    def _set_running(self, running: bool):
        super()._set_running(running)
        for w in (self.layer_combo, self.resume_check, self.output_edit, self.browse_button):
            w.setEnabled(not running)

    # -- updates (main thread) ------------------------------------------------------------

    def _on_update(self, upd):
        if upd.phase == "starting":
            self.status_label.setText(
                f"connecting to the cluster and reading brick statistics... {fmt_seconds(upd.elapsed)}")
            return
        self.progress.setRange(0, max(1, upd.total))
        self._set_progress(upd.done)
        kinds = [f"{upd.encoded} trained", f"{upd.background} background"]
        if upd.reused:
            kinds.append(f"{upd.reused} reused")
        eta = "" if upd.eta is None or upd.done >= upd.total else f", about {fmt_seconds(upd.eta)} left"
        stopping = " (stopping after the bricks in flight)" if self._stop.is_set() else ""
        self.status_label.setText(
            f"{upd.done}/{upd.total} bricks ({', '.join(kinds)}), {upd.n_gaussians:,} Gaussians, "
            f"{fmt_seconds(upd.elapsed)} elapsed{eta}{stopping}"
        )

    def _on_result(self, report):
        from napari.utils.notifications import show_info

        if report is None:  # cancelled (viewer closing)
            return
        self.report = report
        if report.get("stopped"):
            done = report["encoded"] + report["background"] + report["reused"]
            self.summary_label.setText(
                f"stopped: {done} of {report['bricks']} bricks are staged in {report['parts']}; "
                "Start with resume checked continues from them."
            )
            self.status_label.setText("")
            self.resume_check.setChecked(True)
            return
        self._set_progress(self.progress.maximum())
        self.status_label.setText("")
        self.summary_label.setText(_summary(report))
        show_info(f"wrote {report['output']}")
        self.open_output(report["output"])

    def open_output(self, path):
        """Open ``path`` with the plugin's reader, as File > Open does."""
        from napari.utils.notifications import show_error

        try:
            self.output_layers = list(self.viewer.open(path, plugin="napari-volmicro"))
        except Exception as exc:  # noqa: BLE001 - napari wraps reader failures in its own errors
            show_error(f"could not open {path}: {exc}")
            self.output_layers = []

    def _on_error(self, exc):
        from napari.utils.notifications import show_error

        msg = f"bricked compression failed: {exc}"
        if isinstance(exc, (VolmicroError, OSError)):
            msg = f"cannot compress '{self._source_name}': {exc}"
        show_error(msg)
        self.status_label.setText(msg)
        self.progress.setRange(0, 1)
        self._set_progress(0)

    def _on_finished(self):
        self.worker = None
        self._set_running(False)

    # -- lifecycle --------------------------------------------------------------------------

    def _watch_window(self):
        if self._close_watcher is None:
            self._close_watcher = watch_window_close(self, self.abort)

    def closeEvent(self, event):
        self.abort()
        super().closeEvent(event)


def _summary(report: dict) -> str:
    parts = [
        f"{report['bpp']:.3f} bpp",
        f"ratio {report['ratio']:.0f}:1",
        f"{report['bricks']} bricks ({report['encoded']} trained, {report['background']} background"
        + (f", {report['reused']} reused" if report["reused"] else "") + ")",
        f"{report['n_gaussians']:,} Gaussians",
        f"{report['file_bytes']:,} bytes",
        fmt_seconds(report["seconds"]),
    ]
    peaks = report.get("worker_peak_bytes")
    if peaks:
        parts.append(f"peak worker memory {max(peaks.values()) / 2**20:,.0f} MiB")
    return "done: " + ", ".join(parts)
