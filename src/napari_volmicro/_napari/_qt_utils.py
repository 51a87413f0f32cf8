"""Small Qt helper shared by the widgets: notice when the viewer window closes."""

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

