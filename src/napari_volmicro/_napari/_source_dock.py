"""What both Compress docks share (no training or decoding here).

``SourceLayerDock`` is a dock listing the viewer's layers to compress (with a
note saying why the chosen one cannot be used), a preset and steps, Start and
Stop, a progress bar and a summary line; the list follows the viewer's layers.
Subclasses lay the widgets out with their own rows, and provide ``start``,
``stop`` and ``check_layer``.
"""

from __future__ import annotations

from qtpy.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

#: metadata key marking the live reconstruction layer (so it is not offered as a source)
RECON_KEY = "volmicro_reconstruction"


def check_source_layer(layer) -> str | None:
    """Why ``layer`` cannot be compressed (a message), or None if it can."""
    from napari.layers import Image

    if layer is None:
        return "add a 3D image layer to compress"
    if not isinstance(layer, Image):
        return f"'{layer.name}' is a {type(layer).__name__} layer; pick a 3D image layer"
    if getattr(layer, "rgb", False):
        return f"'{layer.name}' is RGB; compress one channel (split it into single-channel layers)"
    if getattr(layer, "multiscale", False):
        return f"'{layer.name}' is multiscale; open its full-resolution level as a plain image"
    if layer.ndim != 3:
        return f"'{layer.name}' is {layer.ndim}D; the compressor needs a 3D (Z, Y, X) volume"
    if min(layer.data.shape) < 8:
        return f"'{layer.name}' has shape {tuple(layer.data.shape)}; each axis needs at least 8 voxels"
    return None


def fill_layer_combo(combo, viewer, check) -> None:
    """Offer the viewer's layers (not ours) in ``combo``, keeping the current choice or
    picking the first layer ``check`` accepts (``check(layer)`` returns None)."""
    current = combo.currentText()
    layers = [lyr for lyr in viewer.layers if not made_by_us(lyr)]
    names = [lyr.name for lyr in layers]
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(names)
    if current in names:
        combo.setCurrentIndex(names.index(current))
    else:
        for i, lyr in enumerate(layers):
            if check(lyr) is None:
                combo.setCurrentIndex(i)
                break
    combo.blockSignals(False)


def presets() -> tuple[str, ...]:
    """The encoder's preset names (``default`` first)."""
    try:
        from ..encode.config import PRESETS

        return tuple(PRESETS)
    except Exception:  # encoder not installed yet / no preset table
        return ("default",)


def made_by_us(layer) -> bool:
    """Whether ``layer`` is one of this plugin's outputs (a decoded model, centres, a live reconstruction)."""
    from ..features import METADATA_KEY
    from ._layers import MODEL_KEY

    meta = getattr(layer, "metadata", None) or {}
    return MODEL_KEY in meta or METADATA_KEY in meta or RECON_KEY in meta


def fmt_seconds(s: float) -> str:
    """``s`` seconds as \"42 s\", \"3 min 05 s\" or \"2 h 07 min\"."""
    s = max(0.0, float(s))
    if s < 60:
        return f"{s:.0f} s"
    m, s = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


class SourceLayerDock(QWidget):
    """Base of the Compress docks: the source-layer list and the controls every run has.

    progress_format: the progress bar's text (``%v`` done of ``%m``).
    """

    def __init__(self, napari_viewer, progress_format: str, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker = None  # the running napari worker, if any
        self.layer_combo = QComboBox()
        self.layer_note = QLabel()
        self.layer_note.setWordWrap(True)
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(presets())
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(0, 1_000_000)
        self.steps_spin.setSpecialValueText("preset default")
        self.start_button = QPushButton("Start")
        self.stop_button = QPushButton("Stop")
        self.progress = QProgressBar()
        self.progress.setFormat(progress_format)
        self.summary_label = QLabel("")
        self.summary_label.setWordWrap(True)

    def lay_out(self, form, buttons, *middle) -> None:
        """Stack ``form``, a row of ``buttons``, the progress bar, the ``middle`` widgets and the summary."""
        row = QHBoxLayout()
        for button in buttons:
            row.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(row)
        layout.addWidget(self.progress)
        for widget in middle:
            layout.addWidget(widget)
        layout.addWidget(self.summary_label)
        layout.addStretch(1)

    def check_layer(self, layer) -> str | None:
        """Why ``layer`` cannot be compressed here (a message), or None."""
        return check_source_layer(layer)

    def follow_layers(self) -> None:
        """Connect the controls and keep the layer list in step with the viewer (call last in ``__init__``)."""
        self.layer_combo.currentIndexChanged.connect(self._on_layer_choice)
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        ev = self.viewer.layers.events
        ev.inserted.connect(self._refill_layers)
        ev.removed.connect(self._on_layer_removed)
        ev.reordered.connect(self._refill_layers)
        self._refill_layers()

    def selected_layer(self):
        name = self.layer_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _refill_layers(self, *_):
        fill_layer_combo(self.layer_combo, self.viewer, self.check_layer)
        self._on_layer_choice()

    def _on_layer_removed(self, event):
        self._refill_layers()

    def _on_layer_choice(self, *_) -> str | None:
        problem = self.check_layer(self.selected_layer())
        self.layer_note.setText(problem or "")
        self.start_button.setEnabled(problem is None and self.worker is None)
        return problem

    @property
    def running(self) -> bool:
        return self.worker is not None

    def _set_running(self, running: bool):
        """Enable Start (when the layer is usable) or Stop; subclasses add their own controls."""
        self.start_button.setEnabled(not running and self.check_layer(self.selected_layer()) is None)
        self.stop_button.setEnabled(running)

    def _set_progress(self, value: int):
        """``QProgressBar.setValue`` repaints at once, and in napari's window that can
        redraw the whole canvas inside our handler; this defers the paint to Qt's
        ordinary update cycle."""
        bar = self.progress
        bar.setUpdatesEnabled(False)
        bar.setValue(value)
        bar.setUpdatesEnabled(True)

    def _layer_to_start(self, busy: str):
        """The selected layer if a run may start on it, else None after telling the user why
        (``busy`` when a run is going on, else what is wrong with the layer)."""
        from napari.utils.notifications import show_error, show_info

        if self.worker is not None:
            show_info(busy)
            return None
        layer = self.selected_layer()
        problem = self.check_layer(layer)
        if problem:
            show_error(problem)
            return None
        return layer
