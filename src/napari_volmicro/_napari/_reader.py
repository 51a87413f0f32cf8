"""Reader for ``.vmg`` files: an on-demand decoded Image layer and a Points layer of centres.

A file that cannot be read (corrupt, truncated, newer format) gives a napari
error notification naming the file and the problem, and no layers; it does not
raise (which would open a traceback dialog).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import VolmicroError
from ._layers import image_layer_data, points_layer_data

#: What napari treats as "read fine, but nothing to add" (no fallback to other readers).
NO_LAYERS = [(None,)]


def get_reader(path):
    """npe2 reader hook: ``read_vmg`` for a single ``.vmg`` path, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if not str(path).lower().endswith(".vmg"):
        return None
    return read_vmg


def read_vmg(path):
    """Layers for a ``.vmg`` file; opens the Browse widget, which decodes the visible region."""
    if isinstance(path, list):
        path = path[0]
    from napari.utils.notifications import show_error

    from .. import load

    try:
        gv = load(path)
    except VolmicroError as exc:
        show_error(f"napari-volmicro could not open {Path(path).name}: {exc}")
        return NO_LAYERS
    except OSError as exc:
        show_error(f"napari-volmicro could not read {Path(path).name}: {exc.strerror or exc}")
        return NO_LAYERS
    stem = Path(path).stem
    _open_browse_dock()
    return [image_layer_data(gv, stem), points_layer_data(gv, f"{stem} centres")]


def _open_browse_dock():
    """Show the Browse dock in the current viewer (it attaches to model layers as they arrive)."""
    import napari

    viewer = napari.current_viewer()
    if viewer is None or getattr(viewer, "window", None) is None:
        return
    try:
        viewer.window.add_plugin_dock_widget("napari-volmicro", "Browse")
    except Exception as exc:  # no Qt window (headless use): layers still load
        from napari.utils.notifications import show_warning

        show_warning(f"napari-volmicro: could not open the Browse widget ({exc})")
