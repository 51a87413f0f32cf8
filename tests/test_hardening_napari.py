"""Issue 15, item 2 (napari side): a valid file declaring a huge shape opens lazily, whatever the shape.

A 184-byte file may declare 3,000,000^3 voxels: the reader made a full-shape broadcast placeholder
and numpy raised ``ValueError: iterator is too large``. Now the placeholder is a coarse zero-memory
grid over the same world extent (the Browse widget decodes what the view shows), and a model
longer along an axis than napari's sliders can step through is refused with a notification.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from napari_volmicro.container import save  # noqa: E402
from napari_volmicro.gaussians import GaussianVolume  # noqa: E402
from napari_volmicro.synthetic import random_volume  # noqa: E402


def _huge(tmp_path, shape, name="huge.vmg", n=0):
    if n:
        gv = random_volume(shape=(16, 16, 16), n=n, seed=0)
        gv = GaussianVolume(shape, gv.centers, gv.scales, gv.quaternions, gv.amplitudes, mapping=gv.mapping)
    else:
        gv = GaussianVolume.empty(shape)
    return save(gv, tmp_path / name)


def _errors():
    from napari.utils.notifications import NotificationSeverity, notification_manager

    return [n.message for n in notification_manager.records if n.severity == NotificationSeverity.ERROR]


@pytest.mark.parametrize("shape", [(3_000_000,) * 3, (100_000, 3_000_000, 100), (100_000,) * 3])
def test_reader_gives_a_zero_memory_placeholder_for_any_shape(tmp_path, shape):
    from napari.components import ViewerModel
    from napari.layers import Layer

    from napari_volmicro._napari._layers import BASE_KEY
    from napari_volmicro._napari._reader import PLACEHOLDER_MAX_AXIS, read_vmg

    path = _huge(tmp_path, shape, n=20)
    assert path.stat().st_size < 2000
    layers = read_vmg(str(path))
    data, kwargs, kind = layers[0]
    assert kind == "image" and data.nbytes >= 0 and data.base is not None  # a broadcast view, no voxels
    assert max(data.shape) <= PLACEHOLDER_MAX_AXIS
    steps = np.asarray(kwargs["scale"]) / np.asarray(kwargs["metadata"][BASE_KEY][0])
    extent = np.asarray(data.shape) * steps
    assert np.all(extent <= np.asarray(shape)) and np.all(extent > np.asarray(shape) - steps)
    viewer = ViewerModel()
    for d in layers:
        viewer.add_layer(Layer.create(*d))
    assert viewer.layers[0].extent.world[1][0] <= shape[0]


def test_reader_refuses_models_longer_than_napari_can_step(tmp_path):
    from napari_volmicro._napari._reader import NO_LAYERS, read_vmg

    path = _huge(tmp_path, (2**31 - 1, 100, 100))
    before = len(_errors())
    assert read_vmg(str(path)) == NO_LAYERS
    new = _errors()[before:]
    assert len(new) == 1 and "napari can browse at most 999,999,998 voxels along an axis" in new[0]


@pytest.mark.gui
def test_huge_model_opens_and_browses_in_a_viewer(viewer_factory, tmp_path, qtbot):
    """In a real window: the layers appear, Browse decodes the visible block, no error notification."""
    path = _huge(tmp_path, (3_000_000,) * 3, n=20)
    viewer = viewer_factory(show=True)
    before = len(_errors())
    layers = viewer.open(str(path), plugin="napari-volmicro")
    assert [type(lyr).__name__ for lyr in layers] == ["Image", "Points"]
    image = layers[0]
    widget = next(w for name, w in viewer.window.dock_widgets.items() if name.startswith("Browse"))
    qtbot.waitUntil(lambda: widget.browser is not None and widget.browser.last is not None, timeout=60_000)
    qtbot.waitUntil(lambda: not widget.browser.busy, timeout=60_000)
    assert _errors()[before:] == []
    grid = widget.browser.last.request.grid
    assert grid.shape[0] == 1 and grid.shape[1] * grid.shape[2] < 4_000_000  # one slice, screen-sized
    assert image.data.shape[0] == 3_000_000  # the block, repeated along the slice axis without copies
