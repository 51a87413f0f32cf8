"""Small Qt helpers shared by the widgets: notice when the viewer window closes; warm the canvas font."""

from __future__ import annotations

from qtpy.QtCore import QEvent, QObject


class CloseWatcher(QObject):
    """Event filter calling ``callback()`` when the watched window receives a Close event."""

    def __init__(self, callback, parent=None):
        super().__init__(parent)
        self.callback = callback

    def eventFilter(self, obj, event):
        if event.type() == QEvent.Type.Close:
            self.callback()
        return False


def watch_window_close(widget, callback):
    """Install a ``CloseWatcher`` on ``widget``'s top-level window (once it is docked).

    Returns the watcher (keep a reference), or None if the widget has no separate window yet.
    """
    win = widget.window()
    if win is None or win is widget:
        return None
    watcher = CloseWatcher(callback, widget)
    win.installEventFilter(watcher)
    return watcher


#: the glyphs vispy's text layout measures for every text visual, even an empty one (and the space)
LAYOUT_GLYPHS = "ÅÉÑŐjgpqy "


def warm_text_glyphs(viewer, chars: str = LAYOUT_GLYPHS) -> None:
    """Render ``chars`` into the canvas font, one per event-loop turn.

    The first draw of a canvas's first Points layer renders these glyphs
    (signed-distance fields on the CPU, ~9 ms each) for its empty text
    visual: ~90 ms inside one frame. Rendered beforehand, a few ms at a time,
    that frame is shorter. Uses napari's private canvas (``font_info``);
    does nothing where it is missing or the glyphs are already there.
    """
    from qtpy.QtCore import QTimer

    from ._layers import unwrapped

    try:
        info = unwrapped(viewer).window._qt_viewer.canvas.font_info  # not through the plugin proxy (it warns)
        info = info() if callable(info) else info  # a method in napari 0.9
        font = info.font_manager.get_font(info.face)
    except Exception:  # noqa: BLE001 - another napari version, or no window: nothing to warm
        return
    todo = list(chars)

    def next_glyph():
        try:
            font[todo.pop(0)]
        except Exception:  # noqa: BLE001 - a warm-up must never break the widget
            return
        if todo:
            QTimer.singleShot(0, next_glyph)

    QTimer.singleShot(0, next_glyph)
