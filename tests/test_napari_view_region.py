"""Which voxels a 2D view shows, strided 3D boxes, and block placement (no Qt)."""

import numpy as np

from napari_volmicro._napari._view_region import placement, strided_box, visible_region
from napari_volmicro.region import RegionGrid, full_grid


def _world_box(grid, scale, translate, axis):
    """World interval covered by the grid's voxels along ``axis`` (voxel = +-0.5 around its centre)."""
    lo = translate[axis] + (grid.start[axis] - 0.5) * scale[axis]
    hi = translate[axis] + (grid.last[axis] + 0.5) * scale[axis]
    return lo, hi


def test_zoomed_in_view_covers_the_screen_and_no_more():
    shape, scale, translate = (30, 200, 300), (2.0, 0.5, 0.5), (5.0, -10.0, 20.0)
    center, zoom, canvas = (30.0, 70.0), 8.0, (400, 640)  # screen shows 50 x 80 world units
    g = visible_region(shape, scale, translate, (1, 2), 5.0 + 7 * 2.0 + 0.4, center, zoom, canvas)
    assert (g.start[0], g.stop[0]) == (7, 8)
    assert g.step == (1, 1, 1)
    for j, axis in enumerate((1, 2)):
        half = canvas[j] / (2 * zoom)
        lo, hi = _world_box(g, scale, translate, axis)
        assert lo <= center[j] - half and hi >= center[j] + half  # covers the screen
        # and the first/last voxel really are on screen (their far edge / near edge inside)
        assert lo + scale[axis] > center[j] - half and hi - scale[axis] < center[j] + half


def test_zoomed_out_view_is_strided_and_clipped():
    shape, scale = (10, 1000, 800), (1.0, 1.0, 1.0)
    g = visible_region(shape, scale, (0, 0, 0), (1, 2), 3.0, (500.0, 400.0), 0.3, (600, 600))
    assert g.start[1:] == (0, 0) and g.stop[1:] == (1000, 800)
    assert g.step[1:] == (3, 3)  # floor(1 / 0.3)
    assert g.shape[1] * 0.3 * 3 <= 1000 * 0.3 + 1  # about one decoded sample per screen pixel


def test_views_outside_the_volume_decode_nothing():
    shape = (10, 50, 50)
    assert visible_region(shape, (1, 1, 1), (0, 0, 0), (1, 2), 20.0, (25.0, 25.0), 1.0, (100, 100)) is None
    assert visible_region(shape, (1, 1, 1), (0, 0, 0), (1, 2), 3.0, (500.0, 25.0), 4.0, (100, 100)) is None


def test_transposed_view_uses_the_other_slice_axis():
    g = visible_region((20, 30, 40), (1, 1, 1), (0, 0, 0), (0, 2), 12.2, (10.0, 20.0), 1.0, (1000, 1000))
    assert (g.start[1], g.stop[1]) == (12, 13)
    assert g.start[0] == 0 and g.stop[0] == 20 and g.stop[2] == 40


def test_strided_box_and_placement():
    box = RegionGrid((4, 10, 0), (20, 30, 36), (1, 1, 1))
    g = strided_box(box, 1000)
    assert g.size <= 1000 and g.step == (3, 3, 3) and g.start == box.start
    assert strided_box(full_grid((8, 8, 8)), 10**6).step == (1, 1, 1)
    scale, translate = placement(g, (2.0, 0.5, 0.5), (1.0, 2.0, 3.0))
    assert scale == (6.0, 1.5, 1.5)
    assert translate == (9.0, 7.0, 3.0)
    # element j of the block lands on voxel start + j * step
    j = np.array([2, 3, 4])
    world = np.asarray(translate) + j * np.asarray(scale)
    voxel = (world - np.array([1.0, 2.0, 3.0])) / np.array([2.0, 0.5, 0.5])
    np.testing.assert_allclose(voxel, np.asarray(g.start) + j * np.asarray(g.step))
    s2, t2 = placement(g, (2.0, 0.5, 0.5), (1.0, 2.0, 3.0), broadcast_axis=0)
    assert s2[0] == 2.0 and t2[0] == 1.0 and s2[1:] == scale[1:]
