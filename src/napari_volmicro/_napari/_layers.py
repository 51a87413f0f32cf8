"""Layer data for a ``GaussianVolume``: the on-demand decoded Image and the centres' Points.

Returned as napari ``LayerDataTuple``s (data, kwargs, layer_type), so readers,
sample-data providers and widgets all make the same layers. No Qt here.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np

from ..features import METADATA_KEY, feature_table, model_metadata
from ..gaussians import GaussianVolume

#: Image-layer metadata key holding the model and the layer's base placement.
MODEL_KEY = "volmicro_model"
BASE_KEY = "volmicro_base"
#: Image-layer metadata key set when the contrast limits are to come from the first decoded block
#: (a model read brick by brick: its amplitudes are not known without reading every brick).
AUTO_CONTRAST_KEY = "volmicro_auto_contrast"


def parameters_read(gv: GaussianVolume) -> bool:
    """Whether ``gv``'s parameter arrays are in memory (False for a lazy model not yet read whole)."""
    return getattr(gv, "loaded", True)


def same_layer(a, b) -> bool:
    """Identity of two layers, seeing through napari's plugin proxies (``__wrapped__``)."""
    return unwrapped(a) is unwrapped(b)


def placeholder(gv: GaussianVolume) -> np.ndarray:
    """A zero-memory array of the model's shape and dtype (read-only broadcast of one zero)."""
    return np.broadcast_to(np.zeros((1, 1, 1), gv.mapping.dtype), gv.shape)


def contrast_limits(gv: GaussianVolume) -> tuple[float, float]:
    """Display range in original units: background level to the 95th percentile Gaussian peak.

    (The very brightest Gaussians, e.g. a soma, would otherwise leave thin structures dark.)
    A lazy model not yet read whole uses a peak of 1 model unit (the mapping's range);
    ``contrast_from_block`` refines it from the first decoded block.
    """
    m = gv.mapping
    peak = float(np.percentile(gv.amplitudes, 95)) if gv.n_gaussians and parameters_read(gv) else 1.0
    lo, hi = m.offset, m.offset + m.scale * max(peak, 1e-6)
    clip_lo, clip_hi = m.clip_range
    lo, hi = max(lo, clip_lo), min(hi, clip_hi)
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def image_layer_data(gv: GaussianVolume, name: str, scale=None, translate=(0.0, 0.0, 0.0), data=None):
    """An Image layer for ``gv``: ``data`` (default a placeholder the Browse widget fills on demand).

    scale/translate: world placement of voxel (0, 0, 0) and the voxel size (ZYX;
    scale defaults to ``gv.spacing``). The model and this base placement ride in the metadata.
    """
    scale = tuple(float(s) for s in (gv.spacing if scale is None else scale))
    translate = tuple(float(t) for t in translate)
    metadata = {MODEL_KEY: gv, BASE_KEY: (scale, translate)}
    if not parameters_read(gv):
        metadata[AUTO_CONTRAST_KEY] = True
    kwargs = {
        "name": name,
        "scale": scale,
        "translate": translate,
        "contrast_limits": contrast_limits(gv),
        "colormap": "gray",
        "metadata": metadata,
    }
    return (placeholder(gv) if data is None else data, kwargs, "image")


def contrast_from_block(block: np.ndarray) -> tuple[float, float]:
    """Display range (original units) from a decoded block: its minimum to its 99.5th percentile."""
    lo = float(block.min())
    hi = float(np.percentile(block, 99.5))
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def points_layer_data(gv: GaussianVolume, name: str, scale=None, translate=(0.0, 0.0, 0.0), features=None):
    """A Points layer of the centres (ZYX voxels) with ``feature_table`` features.

    Point size is twice the geometric mean standard deviation (voxels); colour by amplitude.
    features: ``feature_table(gv)`` if already computed (e.g. in a worker thread).
    """
    scale = tuple(float(s) for s in (gv.spacing if scale is None else scale))
    feats = feature_table(gv) if features is None else features
    size = 2.0 * np.cbrt(feats["sigma_0"] * feats["sigma_1"] * feats["sigma_2"]) if gv.n_gaussians else 1.0
    kwargs = {
        "name": name,
        "scale": scale,
        "translate": tuple(float(t) for t in translate),
        "features": feats,
        "size": size,
        "face_color": "amplitude" if gv.n_gaussians else "yellow",
        "face_colormap": "viridis",
        "border_width": 0,
        "opacity": 0.7,
        "visible": True,
        "metadata": {METADATA_KEY: model_metadata(gv)},
    }
    return (gv.centers.astype(np.float64), kwargs, "points")


def update_points_layer(layer, gv: GaussianVolume, features=None, data: bool = True) -> None:
    """Replace a Points layer's centres and features with ``gv``'s (main thread only).

    data=False: the layer already holds ``gv``'s centres; update the rest.
    """
    _, kwargs, _ = points_layer_data(gv, layer.name, features=features)
    if data:
        set_points_data(layer, gv.centers.astype(np.float64))
    with _refresh_blocked(layer):  # then the rest with one re-slice instead of four
        layer.features = kwargs["features"]
        layer.size = kwargs["size"]
        layer.metadata = {**layer.metadata, METADATA_KEY: kwargs["metadata"][METADATA_KEY]}
        if gv.n_gaussians:
            layer.face_color = "amplitude"
            layer.face_colormap = "viridis"
    layer.refresh()


def unwrapped(obj):
    """The napari object behind a plugin proxy (``PublicOnlyProxy``), or ``obj`` itself.

    napari hands plugin widgets a proxy viewer whose private attributes warn on
    access (a FutureWarning per call, shown to the user); the few private napari
    features used here are reached through this, and each is guarded.
    """
    return getattr(obj, "__wrapped__", obj)


def set_points_data(layer, data) -> None:
    """``layer.data = data``, with the view re-sliced even while the layer is hidden.

    napari re-slices only visible layers on a data change; a later change of a
    hidden layer's features, sizes or colours then indexes the new points with
    the old view's indices: an IndexError inside napari's vispy layer, which
    aborts the Qt event loop when the count dropped.
    """
    layer.data = data
    if not layer.visible:
        layer.set_view_slice()


def _refresh_blocked(layer):
    """napari's (private) ``Layer._block_refresh()``, or a no-op context where it is missing.

    Only around changes that keep the number of points: with the refresh blocked,
    napari's view indices are not updated.
    """
    block = getattr(unwrapped(layer), "_block_refresh", None)
    return block() if block is not None else nullcontext()
