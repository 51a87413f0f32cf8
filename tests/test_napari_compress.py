"""Compress widget driving the real Trainer on a small real crop (under Xvfb)."""

import functools
import sys
import threading

import numpy as np
import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui

SCALE = (2.0, 0.5, 0.5)
TRANSLATE = (10.0, -3.0, 4.0)


def _errors():
    from napari.utils.notifications import NotificationSeverity, notification_manager

    return [n.message for n in notification_manager.records if n.severity == NotificationSeverity.ERROR]


def _widget(viewer, crop, **trainer_options):
    from napari_volmicro._napari._compress import CompressWidget
    from napari_volmicro.encode import Trainer

    viewer.add_image(crop, name="beads", scale=SCALE, translate=TRANSLATE)
    widget = CompressWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Compress")
    # the real Trainer, without the slow occupancy-gate fit, so the test takes seconds
    widget.trainer_factory = functools.partial(Trainer, gate=False, **trainer_options)
    widget.budget_kind.setCurrentText("Gaussians")
    widget.budget_value.setValue(60)
    widget.snapshot_every_s = 0.5
    return widget


def _started(viewer_factory, crop, steps):
    """A viewer with ``crop`` and a Compress widget that was told to Start a ``steps``-step run."""
    viewer = viewer_factory()
    widget = _widget(viewer, crop)
    widget.steps_spin.setValue(steps)
    widget.start()
    return viewer, widget, widget.worker


def _record_threads(viewer, seen):
    """Record whether each layer event fires on the main thread."""

    def watch(layer):
        for name in ("data", "scale", "translate", "features", "metadata"):
            ev = getattr(layer.events, name, None)
            if ev is not None:
                ev.connect(lambda e: seen.append(threading.current_thread() is threading.main_thread()))

    viewer.layers.events.inserted.connect(
        lambda e: (seen.append(threading.current_thread() is threading.main_thread()), watch(e.value))
    )


# napari's plugin proxy turns private-attribute access into a FutureWarning (shown to users): none of ours
@pytest.mark.filterwarnings("error:Private attribute access:FutureWarning")
def test_training_runs_to_completion(make_napari_viewer_proxy, viewer_factory, bead_crop, qtbot):
    viewer = make_napari_viewer_proxy(ensure_main_thread=True)  # setting attributes off-thread raises
    seen = []
    _record_threads(viewer, seen)
    widget = _widget(viewer, bead_crop)
    widget.steps_spin.setValue(25)
    updates, intervals = [], []
    before = sys.getswitchinterval()
    widget.start()
    widget.worker.yielded.connect(updates.append)
    widget.worker.yielded.connect(lambda u: intervals.append(sys.getswitchinterval()))
    with qtbot.waitSignal(widget.worker.finished, timeout=120_000):
        pass
    assert widget.result is not None and not widget.result.stopped
    # Python's switch interval is short while training runs (GUI handlers get the lock back sooner), then restored
    assert intervals and max(intervals) == pytest.approx(min(before, 0.001))
    assert sys.getswitchinterval() == pytest.approx(before)
    gv = widget.result.model
    assert 0 < gv.n_gaussians <= 60 and gv.shape == bead_crop.shape
    names = [lyr.name for lyr in viewer.layers]
    assert names == ["beads", "beads reconstruction", "beads Gaussians"]
    recon, points = viewer.layers["beads reconstruction"], viewer.layers["beads Gaussians"]
    for lyr in (recon, points):
        np.testing.assert_allclose(lyr.scale, SCALE)
        np.testing.assert_allclose(lyr.translate, TRANSLATE)
    assert recon.data.shape == bead_crop.shape
    # the last snapshot was copied into the layer's own buffer; the final (stored) model's decode replaced it
    np.testing.assert_array_equal(recon.data, widget.result.recon)
    assert recon.data is not widget.result.recon
    # the centres follow the reconstruction a moment later (each update is its own redraw)
    def shows_model():
        amp = points.features.get("amplitude")
        return (
            len(points.data) == gv.n_gaussians
            and np.allclose(points.data, gv.centers, rtol=1e-6)
            and amp is not None
            and np.allclose(amp, gv.amplitudes, rtol=1e-6)
        )

    qtbot.waitUntil(shows_model, timeout=2000)
    np.testing.assert_allclose(points.data, gv.centers, rtol=1e-6)
    np.testing.assert_allclose(points.features["amplitude"], gv.amplitudes, rtol=1e-6)
    # progress reached the end; every step's loss/PSNR reached the plot
    assert widget.progress.value() == widget.progress.maximum() == 25
    assert len(widget.plot.steps) == 25 and widget.plot.steps[-1] == 25
    assert updates[-1].done and any(u.model is not None for u in updates)
    text = widget.summary_label.text()
    for key in ("bpp", "ratio", "PSNR", "SSIM", "Gaussians"):
        assert key in text
    # the reported PSNR is the decoded stored model's
    from napari_volmicro.container import quantize
    from napari_volmicro.metrics import psnr_full

    psnr = psnr_full(bead_crop, quantize(gv).decode(evaluator="dense"))
    assert widget.result.summary["psnr_full"] == pytest.approx(psnr, abs=1e-6)
    assert seen and all(seen)
    assert widget.start_button.isEnabled() and widget.save_button.isEnabled()


def test_stop_keeps_the_current_model_and_save_writes_it(viewer_factory, bead_crop, qtbot, tmp_path):
    from napari_volmicro import load

    viewer, widget, _ = _started(viewer_factory, bead_crop, 5000)
    qtbot.waitUntil(lambda: widget.progress.value() >= 3, timeout=60_000)
    widget.stop_button.click()
    with qtbot.waitSignal(widget.worker.finished, timeout=60_000):
        pass
    res = widget.result
    assert res is not None and res.stopped
    assert widget.progress.value() < 5000
    assert "stopped early" in widget.summary_label.text()
    assert "beads reconstruction" in viewer.layers and "beads Gaussians" in viewer.layers
    out = widget.save(tmp_path / "stopped")
    assert out == str(tmp_path / "stopped.vmg")
    back = load(out)
    assert back.n_gaussians == res.model.n_gaussians and back.shape == bead_crop.shape


@pytest.mark.parametrize("visible", [True, False], ids=["shown", "hidden"])
def test_gaussians_layer_takes_fewer_and_more_points_even_when_hidden(viewer_factory, qtbot, visible):
    """The widget's two-step update (centres, then sizes/colours/features) with the point count
    going down and up; napari does not re-slice a hidden layer, which once crashed the second step."""
    from napari_volmicro._napari._compress import CompressWidget
    from napari_volmicro._napari._layers import points_layer_data
    from napari_volmicro.features import feature_table
    from napari_volmicro.synthetic import random_volume

    viewer = viewer_factory()
    widget = CompressWidget(viewer)
    first = random_volume((12, 40, 40), n=120, seed=1)
    data, kwargs, _ = points_layer_data(first, "beads Gaussians")
    widget.points_layer = layer = viewer.add_points(data, **kwargs)
    viewer.dims.set_current_step(0, 6)
    layer.visible = visible
    for seed, n in ((2, 30), (3, 90), (4, 10)):
        gv = random_volume((12, 40, 40), n=n, seed=seed)
        widget._pending_points = (gv, feature_table(gv))
        widget._show_points()
        widget._show_features()
        qtbot.wait(20)
        np.testing.assert_allclose(layer.data, gv.centers, rtol=1e-6)
        np.testing.assert_allclose(layer.features["amplitude"], gv.amplitudes, rtol=1e-6)
    layer.visible = True
    qtbot.wait(20)


def test_start_twice_runs_one_training(viewer_factory, bead_crop, qtbot):
    viewer = viewer_factory()
    widget = _widget(viewer, bead_crop)
    calls = []
    real = widget.trainer_factory
    widget.trainer_factory = lambda *a, **k: calls.append(1) or real(*a, **k)
    widget.steps_spin.setValue(5000)
    widget.start()
    worker = widget.worker
    assert not widget.start_button.isEnabled()
    widget.start()  # ignored, with a message
    widget.start_button.click()  # disabled: no effect
    assert widget.worker is worker and len(calls) == 1
    widget.stop()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass


def test_deleting_the_source_stops_training(viewer_factory, bead_crop, qtbot):
    viewer, widget, worker = _started(viewer_factory, bead_crop, 5000)
    qtbot.waitUntil(lambda: widget.progress.value() >= 2, timeout=60_000)
    before = len(_errors())
    viewer.layers.remove("beads")
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    assert widget.worker is None and widget.result is not None and widget.result.stopped
    assert len(_errors()) == before
    assert "beads" not in viewer.layers and "beads reconstruction" in viewer.layers


def test_closing_the_viewer_stops_the_worker(viewer_factory, bead_crop, qtbot):
    before = sys.getswitchinterval()
    viewer, widget, worker = _started(viewer_factory, bead_crop, 5000)
    qtbot.waitUntil(lambda: widget.progress.value() >= 2, timeout=60_000)
    assert sys.getswitchinterval() == pytest.approx(min(before, 0.001))  # while training runs
    errored = []
    worker.errored.connect(errored.append)
    viewer.close()
    # closing stopped the trainer and waited (without an event loop) for the thread to end
    assert widget.thread_done.is_set()
    assert sys.getswitchinterval() == pytest.approx(before)
    qtbot.wait(200)
    assert errored == []


def test_training_starts_once_the_output_layers_are_added(viewer_factory, bead_crop, qtbot):
    viewer, widget, worker = _started(viewer_factory, bead_crop, 5)
    # the Gaussians layer is added on the next event-loop turn; training starts after its first draw
    assert not widget._worker_started and "beads Gaussians" not in viewer.layers
    qtbot.waitUntil(lambda: widget._worker_started, timeout=5000)
    assert "beads Gaussians" in viewer.layers
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    # a second run reuses both layers and starts at once
    widget.start()
    assert widget._worker_started
    with qtbot.waitSignal(widget.worker.finished, timeout=60_000):
        pass
    assert [lyr.name for lyr in viewer.layers] == ["beads", "beads reconstruction", "beads Gaussians"]


def test_stop_or_close_while_the_layers_are_being_added(viewer_factory, bead_crop, qtbot):
    viewer, widget, worker = _started(viewer_factory, bead_crop, 5000)
    widget.stop()  # before training started: it starts, sees the stop, and keeps the initial model
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    assert widget.result is not None and widget.result.stopped and widget.progress.value() <= 1
    viewer.layers.remove("beads Gaussians")  # Start adds it again, so training waits for it once more
    widget.start()
    assert widget.worker is not None and not widget._worker_started
    viewer.close()  # no thread was started: nothing to wait for, nothing left running
    assert widget.worker is None
    qtbot.wait(300)
    assert not widget._worker_started


def test_live_reconstruction_reuses_the_layer_array_only_when_small(viewer_factory, qtbot):
    from napari_volmicro._napari._compress import CompressWidget

    viewer = viewer_factory()
    layer = viewer.add_image(np.zeros((8, 16, 16), np.float32), name="recon")
    widget = CompressWidget(viewer)
    a, b = np.full((8, 16, 16), 1.0, np.float32), np.full((8, 16, 16), 2.0, np.float32)
    widget._set_recon_data(layer, a)
    own = layer.data
    assert own is not a and np.array_equal(own, a)
    widget._set_recon_data(layer, b)  # copied into the layer's own array
    assert layer.data is own and np.array_equal(own, b) and np.all(a == 1.0)  # the worker's array untouched
    widget._set_recon_data(layer, np.zeros((4, 16, 16), np.float32))  # another shape: a new array
    assert layer.data is not own and layer.data.shape == (4, 16, 16)
    widget.recon_copy_max_bytes = 0  # too big to copy: handed over as it is, and never written into
    widget._set_recon_data(layer, a)
    widget._set_recon_data(layer, b)
    assert layer.data is b and np.all(a == 1.0)


def test_first_live_reconstruction_fills_the_array_made_at_start(viewer_factory, bead_crop, qtbot):
    viewer, widget, worker = _started(viewer_factory, bead_crop, 25)
    layer = viewer.layers["beads reconstruction"]
    buffer = layer.data
    assert isinstance(buffer, np.ndarray) and buffer.flags.writeable and buffer.shape == bead_crop.shape
    assert buffer.dtype == bead_crop.dtype and not buffer.any()
    np.testing.assert_allclose(layer.scale, SCALE)
    first = []
    worker.yielded.connect(lambda u: first.append(u) if u.recon is not None and not first else None)
    qtbot.waitUntil(lambda: bool(first), timeout=60_000)
    assert layer.data is buffer and np.array_equal(buffer, first[0].recon)  # copied in, not replaced
    assert first[0].recon is not buffer
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass


def test_large_live_reconstructions_start_from_a_placeholder(viewer_factory, bead_crop, qtbot):
    viewer = viewer_factory()
    widget = _widget(viewer, bead_crop)
    widget.recon_copy_max_bytes = bead_crop.nbytes - 1  # would not be copied: no array is made for them
    widget.steps_spin.setValue(5)
    widget.start()
    data = viewer.layers["beads reconstruction"].data
    assert data.shape == bead_crop.shape and not data.flags.writeable and data.base.size == 1
    with qtbot.waitSignal(widget.worker.finished, timeout=120_000):
        pass
    assert widget.result is not None


def test_unusable_layers_are_refused(viewer_factory, qtbot):
    from napari_volmicro._napari._compress import CompressWidget

    viewer = viewer_factory()
    viewer.add_image(np.zeros((32, 32), np.float32), name="flat")
    viewer.add_image(np.zeros((16, 16, 16, 3), np.uint8), name="colour", rgb=True)
    viewer.add_points(np.zeros((3, 3)), name="dots")
    viewer.add_image(np.zeros((4, 32, 32), np.float32), name="thin")
    widget = CompressWidget(viewer)
    for name, words in {"flat": "2D", "colour": "RGB", "dots": "Points", "thin": "at least 8"}.items():
        widget.layer_combo.setCurrentText(name)
        assert words in widget.layer_note.text(), (name, widget.layer_note.text())
        assert not widget.start_button.isEnabled()
        before = len(_errors())
        widget.start()
        assert widget.worker is None and len(_errors()) == before + 1
