"""Reader for ``.vmg`` files: an on-demand decoded Image layer and a Points layer of centres.

A file that cannot be read (corrupt, truncated, newer format) gives a napari
error notification naming the file and the problem, and no layers; it does not
raise (which would open a traceback dialog).

A many-brick file opens as a lazy model (``container.LazyGaussianVolume``): the
Browse widget decodes the visible region from only the bricks that reach it.
Its centres are shown as a Points layer only up to ``POINTS_LAYER_MAX``
Gaussians (drawing them needs every brick read); the Image layer's contrast
limits then come from the first decoded block.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import VolmicroError
from ._layers import image_layer_data, parameters_read, points_layer_data

#: What napari treats as "read fine, but nothing to add" (no fallback to other readers).
NO_LAYERS = [(None,)]
#: Largest many-brick model whose centres the reader shows as a Points layer.
POINTS_LAYER_MAX = 200_000


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
    from napari.utils.notifications import show_error, show_info

    from .. import load

    name = Path(path).name
    try:
        gv = load(path)
        with_points = parameters_read(gv) or gv.n_gaussians <= POINTS_LAYER_MAX
        # before the image: reading the centres makes the amplitudes known for the contrast limits
        points = points_layer_data(gv, f"{Path(path).stem} centres") if with_points else None
    except VolmicroError as exc:
        show_error(f"napari-volmicro could not open {name}: {exc}")
        return NO_LAYERS
    except OSError as exc:
        show_error(f"napari-volmicro could not read {name}: {exc.strerror or exc}")
        return NO_LAYERS
    _open_browse_dock()
    layers = [image_layer_data(gv, Path(path).stem)]
    if points is None:
        show_info(
            f"napari-volmicro: {name} holds {gv.n_gaussians:,} Gaussians in {len(gv.vmg.bricks):,} bricks; "
            f"their centres are not shown as points (more than {POINTS_LAYER_MAX:,}). Browse decodes "
            "the visible region from the bricks it needs."
        )
    else:
        layers.append(points)
    return layers


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
