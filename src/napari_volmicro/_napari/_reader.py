"""Reader for ``.vmg`` files: an on-demand decoded Image layer and a Points layer of centres.

A file that cannot be read (corrupt, truncated, newer format) gives a napari
error notification naming the file and the problem, and no layers; it does not
raise (which would open a traceback dialog).

A many-brick file opens as a lazy model (``container.LazyGaussianVolume``): the
Browse widget decodes the visible region from only the bricks that reach it.
Its centres are shown as a Points layer only up to ``POINTS_LAYER_MAX``
Gaussians (drawing them needs every brick read); the Image layer's contrast
limits then come from the first decoded block.

The Image layer holds no voxels, whatever shape the file declares (a
184-byte file may declare 4294967295^3 voxels): a read-only zero-memory
placeholder, at most ``PLACEHOLDER_MAX_AXIS`` samples per axis (a coarser
grid with a correspondingly larger scale for larger models, so numpy and
napari can index it), until Browse decodes what the view shows.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import VolmicroError
from ._layers import image_layer_data, parameters_read, points_layer_data

#: What napari treats as "read fine, but nothing to add" (no fallback to other readers).
NO_LAYERS = [(None,)]
#: Largest many-brick model whose centres the reader shows as a Points layer.
POINTS_LAYER_MAX = 200_000
#: Most samples per axis of the Image layer's placeholder (numpy cannot index 2**63 elements, and
#: napari uploads the slice shown as one texture before Browse replaces it).
PLACEHOLDER_MAX_AXIS = 4096


#: Most voxels along one axis napari's Qt sliders can step through one by one (its slice-number box
#: holds 10 ** digits(n) in a 32-bit int); a model longer than this cannot be browsed voxel by voxel.
NAPARI_MAX_AXIS = 999_999_998


def coarse_placeholder(gv, scale):
    """The placeholder for models over ``PLACEHOLDER_MAX_AXIS`` voxels on an axis: ``(data, scale)``,
    a zero-memory array sampling every ``step``-th voxel and the layer scale (``scale * step``),
    covering the same world extent. None for models small enough for the full-shape placeholder."""
    import numpy as np

    steps = [-(-int(n) // PLACEHOLDER_MAX_AXIS) for n in gv.shape]
    if max(steps) == 1:
        return None
    shape = tuple(max(1, int(n) // s) for n, s in zip(gv.shape, steps))  # never past the model (Qt's int range)
    data = np.broadcast_to(np.zeros((1, 1, 1), gv.mapping.dtype), shape)
    return data, tuple(float(a) * s for a, s in zip(scale, steps))


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
        if max(gv.shape) > NAPARI_MAX_AXIS:
            raise VolmicroError(
                f"it declares {' x '.join(map(str, gv.shape))} voxels (ZYX); napari can browse at most "
                f"{NAPARI_MAX_AXIS:,} voxels along an axis (decode a region with 'volmicro decode --roi')"
            )
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
    coarse = coarse_placeholder(gv, gv.spacing)
    if coarse is None:
        image = image_layer_data(gv, Path(path).stem)
    else:  # the base placement (metadata) stays the model's own; Browse places its blocks by it
        data, kwargs, kind = image_layer_data(gv, Path(path).stem, data=coarse[0])
        image = (data, {**kwargs, "scale": coarse[1]}, kind)
    layers = [image]
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
