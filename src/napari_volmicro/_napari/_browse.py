"""Browse dock widget: on-demand decoding of a ``.vmg`` model, and the ellipsoid overlay.

A thin view over ``RegionBrowser`` (which region to decode, in a worker) and
``ellipsoids`` (the mesh, built in a worker). It attaches to Image layers that
carry a model (made by the reader, the sample data or the Compress widget).
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..errors import VolmicroError
from ..evaluate import DEFAULT_K, DESCRIPTIONS
from ..region import parse_roi
from ._layers import BASE_KEY, MODEL_KEY, same_layer
from ._region_browser import EVALUATORS, RegionBrowser, describe_loss, describe_region

ELLIPSOID_MODES = ("top N by amplitude", "decoded region")


def is_model_layer(layer) -> bool:
    return getattr(layer, "metadata", None) is not None and MODEL_KEY in layer.metadata


class BrowseWidget(QWidget):
    """Evaluator, K, 3D box, last decode time; ellipsoid overlay button."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.browser: RegionBrowser | None = None
        self._mesh_worker = None
        self._close_watcher = None

        self.layer_combo = QComboBox()
        self.evaluator_combo = QComboBox()
        self.evaluator_combo.addItems(EVALUATORS)
        for i, name in enumerate(EVALUATORS):
            self.evaluator_combo.setItemData(i, DESCRIPTIONS[name], Qt.ItemDataRole.ToolTipRole)
        self.k_spin = QSpinBox()
        self.k_spin.setRange(1, 512)
        self.k_spin.setValue(DEFAULT_K)
        self.box_edit = QLineEdit()
        self.box_edit.setPlaceholderText("whole volume, e.g. 0:50,64:192,64:192")
        self.max_voxels_spin = QDoubleSpinBox()
        self.max_voxels_spin.setDecimals(3)
        self.max_voxels_spin.setRange(0.001, 500)
        self.max_voxels_spin.setValue(4.0)
        self.max_voxels_spin.setSuffix(" Mvox")
        self.status = QLabel("no model layer")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Model layer", self.layer_combo)
        form.addRow("Evaluator", self.evaluator_combo)
        form.addRow("K (knn rules)", self.k_spin)
        form.addRow("3D box Z,Y,X", self.box_edit)
        form.addRow("3D budget", self.max_voxels_spin)

        self.ell_mode = QComboBox()
        self.ell_mode.addItems(ELLIPSOID_MODES)
        self.ell_n = QSpinBox()
        self.ell_n.setRange(1, 200_000)
        self.ell_n.setValue(2000)
        self.ell_sigma = QDoubleSpinBox()
        self.ell_sigma.setRange(0.25, 5.0)
        self.ell_sigma.setSingleStep(0.25)
        self.ell_sigma.setValue(2.0)
        self.ell_button = QPushButton("Add ellipsoids")
        ell_form = QFormLayout()
        ell_form.addRow("Gaussians", self.ell_mode)
        ell_form.addRow("N", self.ell_n)
        ell_form.addRow("Size (sigma)", self.ell_sigma)
        ell_form.addRow(self.ell_button)
        ell_box = QGroupBox("Ellipsoid overlay")
        ell_box.setLayout(ell_form)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.status)
        layout.addWidget(ell_box)
        layout.addStretch(1)

        self.layer_combo.currentIndexChanged.connect(self._on_layer_choice)
        self.evaluator_combo.currentTextChanged.connect(self._on_settings)
        self.k_spin.valueChanged.connect(self._on_settings)
        self.max_voxels_spin.valueChanged.connect(self._on_settings)
        self.box_edit.editingFinished.connect(self._on_settings)
        self.ell_button.clicked.connect(self.add_ellipsoids)
        self.viewer.layers.events.inserted.connect(self._on_inserted)
        self.viewer.layers.events.removed.connect(self._on_removed)
        self._refill_layers(select=None)

    # -- layers -----------------------------------------------------------------

    def _model_layers(self):
        return [lyr for lyr in self.viewer.layers if is_model_layer(lyr)]

    def _refill_layers(self, select=None):
        current = select.name if select is not None else self.layer_combo.currentText()
        names = [lyr.name for lyr in self._model_layers()]
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        if current in names:
            self.layer_combo.setCurrentIndex(names.index(current))
        self.layer_combo.blockSignals(False)
        self._on_layer_choice()

    def _on_inserted(self, event):
        if is_model_layer(event.value):
            self._refill_layers(select=event.value)

    def _on_removed(self, event):
        if is_model_layer(event.value):
            self._refill_layers()

    def current_layer(self):
        name = self.layer_combo.currentText()
        for lyr in self._model_layers():
            if lyr.name == name:
                return lyr
        return None

    def _on_layer_choice(self, *_):
        layer = self.current_layer()
        if self.browser is not None and same_layer(self.browser.layer, layer):
            return
        if self.browser is not None:
            self.browser.close()
            self.browser = None
        if layer is None:
            self.status.setText("no model layer: open a .vmg file or run Compress")
            return
        self._evaluator_for(layer.metadata[MODEL_KEY])
        self.browser = RegionBrowser(
            self.viewer,
            layer,
            evaluator=self.evaluator_combo.currentText(),
            k=self.k_spin.value(),
            max_voxels_3d=int(self.max_voxels_spin.value() * 1e6),
            box=self._parse_box(layer),
            on_decoded=self._on_decoded,
            on_error=self._on_error,
        )

    def _evaluator_for(self, model) -> None:
        """Start each model on the evaluator that shows all its file holds: ``dense`` when it has an
        enhancement layer (the KNN rules decode the Gaussians alone), else the default (``knn``)."""
        want = "dense" if getattr(model, "residual", None) is not None else EVALUATORS[0]
        self.evaluator_combo.blockSignals(True)
        self.evaluator_combo.setCurrentText(want)
        self.evaluator_combo.blockSignals(False)

    def _parse_box(self, layer):
        text = self.box_edit.text().strip()
        if not text:
            return None
        try:
            return parse_roi(text, layer.metadata[MODEL_KEY].shape)
        except VolmicroError as exc:
            self.status.setText(f"3D box not used: {exc}")
            return None

    def _on_settings(self, *_):
        b = self.browser
        if b is None:
            return
        b.evaluator = self.evaluator_combo.currentText()
        b.k = self.k_spin.value()
        b.max_voxels_3d = int(self.max_voxels_spin.value() * 1e6)
        b.box = self._parse_box(b.layer)
        b.refresh()

    def _on_decoded(self, result):
        req = result.request
        loss_text, warn = describe_loss(req, result.loss)
        if req.evaluator in ("knn", "knn-centres") and self.browser is not None and self.browser.gv.residual is not None:
            # the KNN rules decode the Gaussians only (the layer is the residual of the exact sum)
            loss_text += ("; " if loss_text else "") + (
                "the file's enhancement layer (texture, fine detail) is not in this view: choose dense to add it")
        self.status.setText(
            f"last decode: {describe_region(req.grid)} ({req.grid.size:,} voxels), "
            f"{result.seconds * 1000:.0f} ms with {req.evaluator}"
            + (f", K={req.k}" if req.evaluator in ("knn", "knn-centres") else "")
            + (f"; {loss_text}" if loss_text else "")
        )
        self.status.setStyleSheet("color: #f0a030;" if warn else "")

    def _on_error(self, message):
        from napari.utils.notifications import show_error

        self.status.setStyleSheet("")
        self.status.setText(message)
        show_error(message)

    # -- ellipsoids ----------------------------------------------------------------

    def add_ellipsoids(self):
        """Add a Surface layer of ellipsoids (built in a worker) for the chosen Gaussians."""
        from napari.qt.threading import create_worker

        from ..ellipsoids import ellipsoid_mesh, select_gaussians

        layer = self.current_layer()
        if layer is None:
            self._on_error("no model layer to draw ellipsoids for")
            return
        gv = layer.metadata[MODEL_KEY]
        scale, translate = layer.metadata[BASE_KEY]
        region = None
        mode = self.ell_mode.currentText()
        if mode == "decoded region":
            if self.browser is None or self.browser.last is None:
                self._on_error("nothing decoded yet: the region is unknown")
                return
            region = self._ellipsoid_region(self.browser.last.request, gv)
        top_n = self.ell_n.value()
        sigma = self.ell_sigma.value()

        def build():
            # a many-brick model reads only the bricks that reach the region
            model = gv.region_model(region) if region is not None and hasattr(gv, "region_model") else gv
            idx = select_gaussians(model, region=region, top_n=top_n)
            return ellipsoid_mesh(model, idx, sigma=sigma), len(idx)

        def done(out):
            (verts, faces, values), n = out
            if len(verts) == 0:
                self._on_error("no Gaussians in that selection")
                return
            self.viewer.add_surface(
                (verts, faces, values),
                name=f"{layer.name} ellipsoids",
                colormap="viridis",
                scale=scale,
                translate=translate,
                opacity=0.8,
                contrast_limits=(float(values.min()), float(max(values.max(), values.min() + 1e-6))),
            )
            self.status.setText(f"ellipsoids: {n:,} Gaussians ({mode}), sigma {sigma:g}")

        worker = create_worker(  # errored handled here, so napari does not also re-raise it
            build, _start_thread=False,
            _connect={"errored": lambda exc: self._on_error(f"ellipsoids failed: {exc}")},
        )
        worker.returned.connect(done)
        self._mesh_worker = worker
        worker.start()

    @staticmethod
    def _ellipsoid_region(req, gv):
        """The decoded region's box; in 2D widened along the slice axis by 3 voxels each way."""
        start, stop = list(req.grid.start), list(req.grid.stop)
        if req.broadcast_axis is not None:
            a = req.broadcast_axis
            start[a] = max(0, start[a] - 3)
            stop[a] = min(gv.shape[a], stop[a] + 3)
        return tuple(slice(int(a), int(b)) for a, b in zip(start, stop))

    def showEvent(self, event):
        super().showEvent(event)
        if self._close_watcher is None:
            from ._qt_utils import watch_window_close

            self._close_watcher = watch_window_close(self, self.close_browser)

    def closeEvent(self, event):
        self.close_browser()
        super().closeEvent(event)

    def close_browser(self):
        if self.browser is not None:
            self.browser.close()
            self.browser = None

