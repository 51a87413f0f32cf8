"""Which voxels a napari view shows, and where a decoded block goes (no Qt, no napari).

Pure functions used by the Browse controller. Conventions: the model's voxel
``i`` along an axis sits at world coordinate ``translate + i * scale`` (napari's
data-to-world transform for a layer with that scale/translate); ZYX order.
"""

from __future__ import annotations

import math

import numpy as np

from ..region import RegionGrid, normalize_region


def visible_region(
    shape,
    scale,
    translate,
    displayed: tuple[int, int],
    slice_world: float,
    center_world: tuple[float, float],
    zoom: float,
    canvas_size: tuple[int, int],
    *,
    oversample: float = 1.0,
) -> RegionGrid | None:
    """The strided region of the model a 2D view shows, or None if it shows none of it.

    shape, scale, translate: the model's voxel shape and its world placement (ZYX).
    displayed: the two model axes on screen (rows axis, columns axis).
    slice_world: world coordinate of the current slice along the third axis.
    center_world: camera centre (world) along the two displayed axes.
    zoom: screen pixels per world unit; canvas_size: (height, width) pixels.
    oversample: screen pixels per decoded voxel at most (1 = one voxel per pixel);
    when zoomed out, the step along an axis is ``floor(1 / (zoom * scale * oversample))``.

    Returns a ``RegionGrid``: the displayed axes cover every voxel any part of
    which is on screen (clipped to the volume, start aligned to the step), the
    slice axis is the one voxel nearest ``slice_world``.
    """
    shape = tuple(int(s) for s in shape)
    scale = np.asarray(scale, np.float64)
    translate = np.asarray(translate, np.float64)
    (slice_axis,) = {0, 1, 2} - set(displayed)
    start, stop, step = [0, 0, 0], [0, 0, 0], [1, 1, 1]
    idx = int(round((slice_world - translate[slice_axis]) / scale[slice_axis]))
    if idx < 0 or idx >= shape[slice_axis]:
        return None
    start[slice_axis], stop[slice_axis] = idx, idx + 1
    for j, axis in enumerate(displayed):
        half = canvas_size[j] / (2.0 * zoom)
        lo = (center_world[j] - half - translate[axis]) / scale[axis]
        hi = (center_world[j] + half - translate[axis]) / scale[axis]
        s = max(1, math.floor(1.0 / (zoom * scale[axis] * oversample) + 1e-9))
        a = max(0, math.floor(lo + 0.5))
        b = min(shape[axis], math.ceil(hi + 0.5))
        if b <= a:
            return None
        a = (a // s) * s
        start[axis], stop[axis], step[axis] = a, b, s
    return normalize_region(tuple(slice(*t) for t in zip(start, stop, step)), shape)


def strided_box(box: RegionGrid, max_voxels: int) -> RegionGrid:
    """``box`` with one common step so that it holds at most ``max_voxels`` samples."""
    size = np.prod([len(range(a, b)) for a, b in zip(box.start, box.stop)], dtype=np.float64)
    s = max(1, math.ceil((size / max(1, max_voxels)) ** (1.0 / 3.0)))
    while True:
        grid = RegionGrid(box.start, box.stop, (s, s, s))
        if grid.size <= max_voxels:
            return grid
        s += 1


def placement(grid: RegionGrid, scale, translate, broadcast_axis: int | None = None):
    """World ``(scale, translate)`` for a layer showing the block decoded on ``grid``.

    Element ``j`` of the block along an axis is voxel ``start + j * step``, so the
    layer's scale is ``scale * step`` and its translate ``translate + start * scale``.
    ``broadcast_axis``: an axis along which the block is repeated over the whole
    volume (the 2D slice axis), placed like the full volume there.
    """
    scale = np.asarray(scale, np.float64)
    translate = np.asarray(translate, np.float64)
    s = scale * np.asarray(grid.step, np.float64)
    t = translate + np.asarray(grid.start, np.float64) * scale
    if broadcast_axis is not None:
        s[broadcast_axis] = scale[broadcast_axis]
        t[broadcast_axis] = translate[broadcast_axis]
    return tuple(s.tolist()), tuple(t.tolist())
