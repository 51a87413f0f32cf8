"""Browse on a many-brick ``.vmg``: the visible region is decoded from only the bricks that reach it
(under Xvfb)."""

import numpy as np
import pytest
import test_bricks_lazy

pytest.importorskip("napari")
pytestmark = pytest.mark.gui

brick_reads = test_bricks_lazy.brick_reads  # fixture: brick indices read from disk


@pytest.fixture
def bricked_file(tmp_path):
    """600 Gaussians over (64, 48, 56), 16^3 bricks (4 x 3 x 4), uint16 mapping, background field."""
    from napari_volmicro.container import save
    from napari_volmicro.intensity import IntensityMapping
    from napari_volmicro.synthetic import random_volume

    rng = np.random.default_rng(2)
    gv = random_volume(shape=(64, 48, 56), n=600, seed=21, mapping=IntensityMapping(80.0, 900.0, np.uint16))
    gv = gv.replace(background=rng.uniform(0.0, 0.05, (3, 3, 3)).astype(np.float32), spacing=(2.0, 1.0, 1.0))
    return save(gv, tmp_path / "bricked.vmg", brick_shape=(16, 16, 16))


@pytest.fixture
def decoded_grids(monkeypatch):
    """Every region Browse asks to decode (recorded in the worker thread)."""
    from napari_volmicro._napari import _region_browser

    grids = []
    original = _region_browser.decode_block

    def recording(gv, request, done=None):
        grids.append(request.grid)
        return original(gv, request, done)

    monkeypatch.setattr(_region_browser, "decode_block", recording)
    return grids


def _browse(viewer, qtbot):
    widget = next(w for name, w in viewer.window.dock_widgets.items() if name.startswith("Browse"))
    qtbot.waitUntil(lambda: widget.browser is not None and widget.browser.last is not None, timeout=60_000)
    qtbot.waitUntil(lambda: not widget.browser.busy, timeout=60_000)
    return widget


def _settle(browser, qtbot, done):
    qtbot.waitUntil(lambda: done() and not browser.busy, timeout=60_000)
    qtbot.wait(300)  # let a trailing (debounced) request run, if any
    qtbot.waitUntil(lambda: not browser.busy, timeout=60_000)


def test_browse_reads_only_the_bricks_the_view_needs(
    viewer_factory, bricked_file, brick_reads, decoded_grids, qtbot, monkeypatch
):
    from napari_volmicro._napari import _reader
    from napari_volmicro._napari._layers import AUTO_CONTRAST_KEY, MODEL_KEY
    from napari_volmicro.container import LazyGaussianVolume, load

    monkeypatch.setattr(_reader, "POINTS_LAYER_MAX", 100)  # a file too large for a Points layer
    whole = load(bricked_file)  # the eager model (its reads are not counted below)
    brick_reads.clear()
    viewer = viewer_factory(show=True)
    layers = viewer.open(str(bricked_file), plugin="napari-volmicro")
    assert [type(lyr).__name__ for lyr in layers] == ["Image"]
    (image,) = layers
    gv = image.metadata[MODEL_KEY]
    assert isinstance(gv, LazyGaussianVolume) and not gv.loaded
    widget = _browse(viewer, qtbot)
    browser = widget.browser
    widget.evaluator_combo.setCurrentText("dense")
    _settle(browser, qtbot, lambda: browser.last.request.evaluator == "dense")
    vmg = gv.vmg
    grid = browser.last.request.grid
    assert browser.last.request.broadcast_axis == 0 and grid.stop[0] - grid.start[0] == 1
    z = grid.start[0]
    needed = vmg.bricks_for_region(grid)
    assert 0 < len(needed) < len(vmg.bricks)

    def reach(grids):
        return {i for g in grids for i in vmg.bricks_for_region(g)}

    # every brick read was needed by a region Browse decoded (the view may have moved while
    # the layer was added), each read once; none of the others was read
    assert sorted(brick_reads) == sorted(reach(decoded_grids)) and len(reach(decoded_grids)) < len(vmg.bricks)
    np.testing.assert_array_equal(image.data[z], gv.decode(grid.slices, "dense")[0])
    np.testing.assert_array_equal(image.data[z], whole.decode(grid.slices, "dense")[0])
    # the contrast limits came from that first block
    assert AUTO_CONTRAST_KEY not in image.metadata
    lo, hi = image.contrast_limits
    assert lo == float(image.data[z].min()) and lo < hi <= float(image.data[z].max())

    # another slice in a different brick layer: only the bricks that reach it are read
    brick_reads.clear()
    seen = reach(decoded_grids)
    decoded_grids.clear()
    target = 5 if z >= 16 else 60
    viewer.dims.set_current_step(0, target)
    _settle(browser, qtbot, lambda: browser.last.request.grid.start[0] == target)
    grid = browser.last.request.grid
    now = vmg.bricks_for_region(grid)
    assert len(now) < len(vmg.bricks) and set(now) - seen
    assert sorted(brick_reads) == sorted(reach(decoded_grids) - seen)  # cached bricks are not read again
    np.testing.assert_array_equal(image.data[target], whole.decode(grid.slices, "dense")[0])

    # zoom in: a sub-rectangle of the slice, still exact and still from its own bricks
    brick_reads.clear()
    seen |= reach(decoded_grids)
    decoded_grids.clear()
    viewer.scene.camera.center = (viewer.scene.camera.center[0], 10.0, 12.0)
    viewer.scene.camera.zoom = 30.0
    _settle(browser, qtbot, lambda: browser.last.request.grid.stop[2] < gv.shape[2])
    grid = browser.last.request.grid
    assert sorted(brick_reads) == sorted(reach(decoded_grids) - seen)
    block = image.data[grid.start[0]]
    np.testing.assert_array_equal(block, whole.decode(grid.slices, "dense")[0])
    assert not gv.loaded  # browsing never read the whole model


def test_small_bricked_file_keeps_its_points_layer(viewer_factory, bricked_file, qtbot):
    from napari_volmicro._napari._layers import AUTO_CONTRAST_KEY
    from napari_volmicro.container import load

    viewer = viewer_factory()
    layers = viewer.open(str(bricked_file), plugin="napari-volmicro")
    assert [type(lyr).__name__ for lyr in layers] == ["Image", "Points"]
    image, points = layers
    whole = load(bricked_file)
    np.testing.assert_array_equal(points.data, whole.centers)
    assert AUTO_CONTRAST_KEY not in image.metadata  # the amplitudes are known: the usual limits
    widget = _browse(viewer, qtbot)
    grid = widget.browser.last.request.grid
    req = widget.browser.last.request
    np.testing.assert_array_equal(
        image.data[grid.start[0]], whole.decode(grid.slices, req.evaluator, k=req.k)[0]
    )
